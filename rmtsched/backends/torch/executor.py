"""The single-process executor: runs any valid schedule of a ``RecurrentModel``, step by step, streaming.

``execute`` validates the schedule against the model's cell DAG, then hands each step to a
``StepRunner``: gather the step's inputs, run each contiguous-layer run with one ``forward_layers``
call, scatter the outputs. Only live activations are kept (an output is dropped as soon as its
consumer has read it) and segment outputs leave through a callback in segment order, so memory does
not grow with sequence length. Steps on any device index run on the model's one torch device here;
the distributed executor reuses ``StepRunner`` with a sliced model per process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from rmtsched.backends.protocol import LayerState, RecurrentModel
from rmtsched.backends.torch.timing import synchronize
from rmtsched.errors import ScheduleError
from rmtsched.sched import Cell, CellGraph, Schedule, build_cell_graph, split_segments
from rmtsched.sched import validate as validate_schedule

SegmentCallback = Callable[[int, torch.Tensor], None]
StepHook = Callable[[int, str], None]  # (step index, "start" or "end")


@dataclass(frozen=True)
class ExecutionStats:
    """What a run did: steps and cells, ``forward_layers`` calls, the most activations alive at once."""

    steps: int
    cells: int
    forward_calls: int
    peak_live_activations: int
    wall_s: float


@dataclass(frozen=True)
class ExecutionResult:
    """Final per-layer state, the segment outputs (if collected), the last segment's raw last-layer
    output ``[B, tokens, d]`` (memory tokens included: RMT's final memory lives there), and stats.

    Tensors were made under ``torch.inference_mode``: read them freely, ``clone()`` one to modify it."""

    final_state: LayerState
    outputs: list[torch.Tensor] | None
    last_hidden: torch.Tensor | None
    stats: ExecutionStats


def contiguous_runs(cells: Iterable[Cell], segment_tokens: tuple[int, ...]) -> list[list[Cell]]:
    """Split a step's cells into runs of consecutive layers whose segments have equal token counts.

    A run is one ``forward_layers`` call; a short last segment gets its own run rather than padding
    (padding would change kernel shapes, hence bits).
    """
    runs: list[list[Cell]] = []
    for cell in sorted(cells):
        if runs:
            last = runs[-1][-1]
            if cell.layer == last.layer + 1 and segment_tokens[cell.segment] == segment_tokens[last.segment]:
                runs[-1].append(cell)
                continue
        runs.append([cell])
    return runs


class StepRunner:
    """Interprets steps for one model (or layer slice) on one batch of sequences.

    ``live`` maps a cell to its output ``[B, tokens, d]`` until its consumer runs. A distributed
    executor moves activations across processes with ``take`` (after the producer's step) and ``put``
    (before the consumer's step); everything else is the same code path.
    """

    def __init__(self, model: RecurrentModel, inputs: torch.Tensor, state: LayerState | None = None):
        if inputs.dim() not in (2, 3) or inputs.shape[1] == 0:
            raise ValueError(
                f"inputs must be token ids [batch, tokens] or embeddings [batch, tokens, d_model] with at least "
                f"one token, got shape {list(inputs.shape)}"
            )
        self.model = model
        # One copy to the model's device up front: a per-segment copy from pageable host memory would
        # block the host on CUDA, i.e. synchronise inside the step loop.
        device = getattr(model, "device", None)
        self.inputs = inputs if device is None else inputs.to(device)
        self.segment_tokens = split_segments(int(inputs.shape[1]), model.segment_len)
        self.starts = [0]
        for tokens in self.segment_tokens:
            self.starts.append(self.starts[-1] + tokens)
        self.state = model.init_state(int(inputs.shape[0])) if state is None else state
        self.live: dict[Cell, torch.Tensor] = {}
        self.last_layer = model.num_layers - 1
        self.keep_last = model.uses_previous_output
        self.forward_calls = 0
        self.peak_live = 0

    def put(self, cell: Cell, hidden: torch.Tensor) -> None:
        self.live[cell] = hidden

    def take(self, cell: Cell) -> torch.Tensor:
        hidden = self.live.pop(cell, None)
        if hidden is None:
            raise ScheduleError(
                f"the output of cell {tuple(cell)} is needed but not available: it has not run yet or was "
                "already consumed (was the schedule validated?)"
            )
        return hidden

    def run_step(self, cells: Iterable[Cell]) -> list[tuple[int, torch.Tensor]]:
        """Run one step; return ``(segment, raw last-layer output)`` for its last-layer cells."""
        finished: list[tuple[int, torch.Tensor]] = []
        for run in contiguous_runs(cells, self.segment_tokens):
            rows = [self._cell_input(cell) for cell in run]
            hidden = rows[0].unsqueeze(0) if len(rows) == 1 else torch.stack(rows)
            layers = range(run[0].layer, run[-1].layer + 1)
            out = self.model.forward_layers(hidden, layers, self.state)
            self.forward_calls += 1
            for cell, row in zip(run, out.unbind(0), strict=True):
                if cell.layer != self.last_layer:
                    self.live[cell] = row
                    continue
                finished.append((cell.segment, row))
                if self.keep_last and cell.segment + 1 < len(self.segment_tokens):
                    self.live[cell] = row
        self.peak_live = max(self.peak_live, len(self.live))
        return finished

    def _cell_input(self, cell: Cell) -> torch.Tensor:
        if cell.layer > 0:
            return self.take(Cell(cell.layer - 1, cell.segment))
        segment = cell.segment
        previous = None
        if self.keep_last and segment > 0:
            previous = self.take(Cell(self.last_layer, segment - 1))
        inputs = self.inputs[:, self.starts[segment] : self.starts[segment + 1]]
        return self.model.segment_input(segment, inputs, previous)


class OrderedDelivery:
    """Delivers segment outputs in segment order, buffering any that finish early (user DAGs, the last
    stage of a distributed run): ``callback(segment, model.segment_output(hidden))``, once per segment."""

    def __init__(self, model: RecurrentModel, callback: SegmentCallback | None, collect: bool):
        self.model, self.callback = model, callback
        self.outputs: list[torch.Tensor] | None = [] if collect else None
        self.pending: dict[int, torch.Tensor] = {}
        self.next_segment = 0
        self.last_hidden: torch.Tensor | None = None

    def add(self, segment: int, hidden: torch.Tensor) -> None:
        self.pending[segment] = hidden
        while self.next_segment in self.pending:
            raw = self.pending.pop(self.next_segment)
            self.last_hidden = raw
            output = self.model.segment_output(raw)
            if self.callback is not None:
                self.callback(self.next_segment, output)
            if self.outputs is not None:
                self.outputs.append(output)
            self.next_segment += 1


def model_graph(model: RecurrentModel, num_tokens: int) -> CellGraph:
    """The cell DAG of ``model`` over an input of ``num_tokens`` tokens (what a schedule must be valid for)."""
    segment_tokens = split_segments(num_tokens, model.segment_len)
    return build_cell_graph(model.num_layers, segment_tokens=segment_tokens, rule=model.dependency_rule)


def execute(
    model: RecurrentModel,
    inputs: torch.Tensor,
    schedule: Schedule,
    *,
    validate: bool = True,
    on_segment_output: SegmentCallback | None = None,
    collect_outputs: bool = True,
    state: LayerState | None = None,
    on_step: StepHook | None = None,
) -> ExecutionResult:
    """Run ``schedule`` on ``model`` over ``inputs`` (token ids ``[B, N]`` or embeddings ``[B, N, d]``).

    ``on_segment_output(segment, output)`` receives each segment's output in order; with
    ``collect_outputs=False`` nothing else is kept (streaming). ``validate=False`` skips the schedule
    check (only for tests that show what an invalid schedule does). ``on_step(index, "start" | "end")``
    brackets each step's work (``rmtsched.sim.trace.StepRecorder`` times a run with it). Runs under
    ``inference_mode``.
    """
    layers = getattr(model, "layers", range(model.num_layers))
    if layers != range(model.num_layers):
        raise ValueError(f"execute needs a model holding all {model.num_layers} layers, got a slice {layers}")
    device = getattr(model, "device", None)
    synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        runner = StepRunner(model, inputs, state)
        if validate:
            validate_schedule(schedule, model_graph(model, int(inputs.shape[1])))
        delivery = OrderedDelivery(model, on_segment_output, collect_outputs)
        for index, step in enumerate(schedule.steps):
            if on_step is not None:
                on_step(index, "start")
            finished = runner.run_step(step.cells)
            if on_step is not None:
                on_step(index, "end")
            for segment, hidden in finished:
                delivery.add(segment, hidden)
    synchronize(device)
    stats = ExecutionStats(
        steps=schedule.num_steps,
        cells=schedule.num_cells,
        forward_calls=runner.forward_calls,
        peak_live_activations=runner.peak_live,
        wall_s=time.perf_counter() - start,
    )
    return ExecutionResult(runner.state, delivery.outputs, delivery.last_hidden, stats)
