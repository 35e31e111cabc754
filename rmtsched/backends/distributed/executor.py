"""One rank's interpreter of a multi-device schedule: run my steps in order, receive inputs, send outputs.

The rank holds only its stage's layers. For each of its steps it gathers every cell's hidden input (the
embeddings from ``segment_input`` for layer 0, else the previous layer's output, kept locally or received
from the rank the plan names), stacks a run of consecutive layers into one ``[w, batch, tokens, d]`` tensor,
calls ``model.forward_layers`` (the model's one copy of the layer code), then sends each output where the
plan says. The last stage hands ``segment_output`` of every segment to a sink.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rmtsched.backends.distributed.comm import PeerLink
from rmtsched.backends.distributed.errors import StepFailure
from rmtsched.backends.distributed.plan import RankPlan, Run
from rmtsched.backends.distributed.sink import SegmentSink
from rmtsched.backends.protocol import RecurrentModel
from rmtsched.sched import Cell

# progress(step index, phase, peer, cell): called when the rank starts computing a step or blocks on a peer.
Progress = Callable[[int, str, int, Cell], None]


@dataclass(frozen=True)
class StageTimes:
    """Seconds one rank spent in one run: computing (segment_input, forward_layers, segment_output),
    blocked on receives or sends, and in total from its start to its last send completing."""

    busy_s: float
    wait_s: float
    wall_s: float


class StageExecutor:
    """Runs a ``RankPlan`` on a model that holds layers ``layer_offset ..`` (local index = layer - offset).

    ``link`` is None on a one-process run (a plan with no sends or receives).
    """

    def __init__(
        self,
        model: RecurrentModel,
        plan: RankPlan,
        *,
        layer_offset: int,
        link_factory: Callable[[Callable[[str, int, Cell], None]], PeerLink] | None,
        progress: Progress | None = None,
    ):
        self.model = model
        self.plan = plan
        self.layer_offset = layer_offset
        self.link_factory = link_factory
        self.progress = progress or (lambda index, phase, peer, cell: None)
        self.bounds = [0, *itertools.accumulate(plan.segment_tokens)]
        self._source_rank = {cell: src for src, cells in plan.recvs.items() for cell in cells}
        self._index = -1

    def run(self, inputs: torch.Tensor, sink: SegmentSink) -> tuple[StageTimes, dict[str, torch.Tensor]]:
        """One pass over the plan from fresh states; returns the times and this rank's final layer states."""
        state = self.model.init_state(inputs.shape[0])
        link = self.link_factory(self._on_wait) if self.link_factory else None
        kept: dict[Cell, torch.Tensor] = {}
        start = time.perf_counter()
        where = "setup"
        try:
            if link is not None:
                link.prefetch()
            for index, runs in self.plan.steps:
                self._index = index
                for run in runs:
                    where = f"step {self._index} (cells {[tuple(c) for c in run]})"
                    self.progress(self._index, "compute", self.plan.rank, run[0])
                    rows = [self._hidden_input(cell, inputs, kept, link) for cell in run]
                    self._deliver(run, self._forward(run, rows, state), kept, link, sink)
                if link is not None:
                    link.prefetch()
            where = "the final sends"
            if link is not None:
                link.finish()
        except Exception as exc:
            raise StepFailure(self.plan.rank, self._index if self._index >= 0 else None, where, exc) from exc
        wall_s = time.perf_counter() - start
        wait_s = link.wait_s if link is not None else 0.0
        # Busy = everything but blocking on peers: segment_input, forward_layers, segment_output, posting messages.
        times = StageTimes(busy_s=wall_s - wait_s, wait_s=wait_s, wall_s=wall_s)
        return times, self._own_state(state)

    def _hidden_input(
        self, cell: Cell, inputs: torch.Tensor, kept: dict[Cell, torch.Tensor], link: PeerLink | None
    ) -> torch.Tensor:
        source = self.plan.data_source(cell)
        previous = None
        if source is not None:
            previous = kept.pop(source) if source in kept else link.recv(source, self._owner(source))
        if cell.layer > 0:
            return previous
        tokens = inputs[:, self.bounds[cell.segment] : self.bounds[cell.segment + 1]]
        return self.model.segment_input(cell.segment, tokens, previous)

    def _forward(self, run: Run, rows: list[torch.Tensor], state: dict[str, torch.Tensor]) -> torch.Tensor:
        # A width-1 run goes through the same stack + forward_layers path as a wide one (batch invariance).
        first = run[0].layer - self.layer_offset
        return self.model.forward_layers(torch.stack(rows), range(first, first + len(run)), state)

    def _deliver(
        self,
        run: Run,
        outputs: torch.Tensor,
        kept: dict[Cell, torch.Tensor],
        link: PeerLink | None,
        sink: SegmentSink,
    ) -> None:
        for row, cell in enumerate(run):
            hidden = outputs[row]
            if cell.layer == self.plan.num_layers - 1:
                sink.add(cell.segment, self.model.segment_output(hidden))
            for dst in self.plan.sends.get(cell, ()):
                link.send(hidden, cell, dst)
            if cell in self.plan.keep:
                kept[cell] = hidden

    def _owner(self, cell: Cell) -> int:
        if cell not in self._source_rank:
            raise RuntimeError(f"rank {self.plan.rank} has no planned source for the output of {tuple(cell)}")
        return self._source_rank[cell]

    def _on_wait(self, phase: str, peer: int, cell: Cell) -> None:
        self.progress(self._index, phase, peer, cell)

    def _own_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This rank's layers' final states, as host copies (the model may hold other layers' too)."""
        first = self.plan.layers.start - self.layer_offset
        own = slice(first, first + len(self.plan.layers))
        return {name: tensor[own].detach().to("cpu", copy=True) for name, tensor in state.items()}
