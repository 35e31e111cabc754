"""Step capture with CUDA graphs: each distinct step shape runs eagerly once, is captured, then replayed.

Eager PyTorch launches every kernel from Python (about 73 us each on the H200, bench/README.md), and one
step runs dozens of kernels. Step shapes repeat: the diagonal schedule's full-width step S - L + 1 times,
each sequential layer S times, and every shape again in the next run. ``StepGraphs`` keeps, per model and
batch size, one graph per shape (which layer ranges, on how many tokens) with static input and output
buffers and the state tensors the graphs update; ``GraphStepRunner`` copies a step's inputs in and replays.
The graph holds the eager step's kernels on the same layouts, so the bits are the eager run's.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rmtsched.backends.protocol import LayerState, RecurrentModel
from rmtsched.backends.torch.executor import StepRunner
from rmtsched.errors import RmtschedError, RunFailure
from rmtsched.sched import Cell

# What a step's graph is keyed by: per run, (first layer, last layer + 1, input row shape, dtype).
StepKey = tuple[tuple[int, int, tuple[int, ...], torch.dtype], ...]
# Records ``work`` (which reads the static inputs and state and writes the static outputs) without running
# it; returns the function that runs it again.
Capture = Callable[[Callable[[], None]], Callable[[], None]]


class CudaGraphsError(RmtschedError, ValueError):
    """CUDA graphs asked for where they cannot work: a model off CUDA, or a cache made for another batch."""


class CudaGraphCapture:
    """Captures into ``torch.cuda.CUDAGraph``s that share one memory pool.

    Sharing is safe here: graphs run one at a time on one stream, and nothing allocated inside a capture
    outlives it (inputs, outputs and state are allocated outside), so a graph's scratch is dead after it.
    """

    def __init__(self) -> None:
        self._pool: tuple[int, int] | None = None
        self._graphs: list[torch.cuda.CUDAGraph] = []

    def __call__(self, work: Callable[[], None]) -> Callable[[], None]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            work()
        if self._pool is None:
            self._pool = graph.pool()
        self._graphs.append(graph)
        return graph.replay


@dataclass(frozen=True)
class CapturedStep:
    """One step shape's graph: static inputs and outputs ``[w, B, n, d]``, one per run, and its replay."""

    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor]
    replay: Callable[[], None]


class StepGraphs:
    """The captured steps of one model for one batch size, kept across runs, and the state they update.

    ``capture`` defaults to real CUDA graphs; the tests pass a stand-in that records the work and reruns it,
    which exercises the same buffers on the CPU. Counters: ``eager_steps`` (first sightings, run eagerly
    and captured), ``replays``; ``captured`` is the number of distinct step shapes.
    """

    def __init__(self, model: RecurrentModel, batch_size: int, capture: Capture | None = None):
        self.model = model
        self.batch_size = batch_size
        self.capture = CudaGraphCapture() if capture is None else capture
        self.steps: dict[StepKey, CapturedStep] = {}
        self.state: LayerState | None = None
        self.eager_steps = 0
        self.replays = 0

    @property
    def captured(self) -> int:
        return len(self.steps)

    def bind_state(self, state: LayerState) -> LayerState:
        """The state tensors every graph reads and updates, now holding ``state``'s values (a run's start)."""
        if self.state is None:
            self.state = {name: tensor.clone() for name, tensor in state.items()}
            return self.state
        if state.keys() != self.state.keys() or any(
            state[name].shape != held.shape or state[name].dtype != held.dtype for name, held in self.state.items()
        ):
            raise CudaGraphsError(
                f"the state {_describe(state)} does not match the one these graphs were captured with "
                f"{_describe(self.state)}"
            )
        for name, held in self.state.items():
            held.copy_(state[name])
        return self.state

    def first_run(self, key: StepKey, runs: list[list[Cell]], inputs: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        """Run a step shape seen for the first time eagerly (which also warms every lazy cache and one-time
        probe the capture must not trigger), then capture it; returns the eager outputs."""
        static_inputs = [torch.stack(rows) for rows in inputs]
        outputs = self._forward(runs, static_inputs)
        for hidden, out in zip(static_inputs, outputs, strict=True):
            if out.shape != hidden.shape or out.dtype != hidden.dtype:
                raise CudaGraphsError(
                    f"forward_layers returned {list(out.shape)} {out.dtype} for input {list(hidden.shape)} "
                    f"{hidden.dtype}; step capture needs outputs shaped like the inputs"
                )
        static_outputs = [torch.empty_like(out) for out in outputs]

        def work() -> None:
            for static, out in zip(static_outputs, self._forward(runs, static_inputs), strict=True):
                static.copy_(out)

        try:
            replay = self.capture(work)
        except RuntimeError as error:
            raise RunFailure(f"capturing step {key} as a CUDA graph failed ({error}); run without CUDA graphs"
                             ) from error
        self.steps[key] = CapturedStep(static_inputs, static_outputs, replay)
        self.eager_steps += 1
        return outputs

    def replay(self, step: CapturedStep, inputs: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        """Copy the step's inputs into ``step``'s buffers and replay it; the outputs are its static buffers."""
        for static, rows in zip(step.inputs, inputs, strict=True):
            torch.stack(rows, out=static)
        step.replay()
        self.replays += 1
        return step.outputs

    def _forward(self, runs: list[list[Cell]], hidden: list[torch.Tensor]) -> list[torch.Tensor]:
        assert self.state is not None  # bound by the runner before its first step
        return [
            self.model.forward_layers(x, range(run[0].layer, run[-1].layer + 1), self.state)
            for run, x in zip(runs, hidden, strict=True)
        ]


class GraphStepRunner(StepRunner):
    """A ``StepRunner`` whose steps run through ``StepGraphs``: eager the first time a shape shows up,
    replayed after that.

    A replay's outputs are views of its graph's static buffers, which the next replay of that graph
    overwrites: an output still waiting for its consumer then is copied out first, and last-layer outputs
    (which leave the step loop) are copied at once.
    """

    def __init__(self, model: RecurrentModel, inputs: torch.Tensor, state: LayerState | None, graphs: StepGraphs):
        if graphs.model is not model:
            raise CudaGraphsError(f"these step graphs were captured for {graphs.model!r}, not {model!r}")
        if inputs.dim() in (2, 3) and int(inputs.shape[0]) != graphs.batch_size:
            raise CudaGraphsError(
                f"these step graphs were captured for batch size {graphs.batch_size}, got inputs of shape "
                f"{list(inputs.shape)}"
            )
        super().__init__(model, inputs, state)
        self.graphs = graphs
        self.state = graphs.bind_state(self.state)
        self._views: dict[StepKey, list[Cell]] = {}  # cells whose live output is a view of that graph's buffers
        self._replayed = False

    def run_step(self, cells: list[Cell]) -> list[tuple[int, torch.Tensor]]:
        finished = super().run_step(cells)
        if not self._replayed:
            return finished
        return [(segment, hidden.clone()) for segment, hidden in finished]

    def forward_runs(
        self, runs: list[list[Cell]], inputs: list[list[torch.Tensor]]
    ) -> list[tuple[torch.Tensor, ...]]:
        key = step_key(runs, inputs)
        step = self.graphs.steps.get(key)
        self._replayed = step is not None
        self.forward_calls += len(runs)
        if step is None:
            return [out.unbind(0) for out in self.graphs.first_run(key, runs, inputs)]
        self._copy_out_views(key)
        outputs = self.graphs.replay(step, inputs)
        self._views[key] = [cell for run in runs for cell in run]
        return [out.unbind(0) for out in outputs]

    def _copy_out_views(self, key: StepKey) -> None:
        """Copy out this graph's outputs still waiting for a consumer: its next replay overwrites them."""
        for cell in self._views.pop(key, ()):
            if cell in self.live:
                self.live[cell] = self.live[cell].clone()

    def result_state(self) -> LayerState:
        """A copy: the next run with these graphs overwrites their state tensors."""
        return {name: tensor.clone() for name, tensor in self.state.items()}


def step_key(runs: list[list[Cell]], inputs: list[list[torch.Tensor]]) -> StepKey:
    """What makes two steps one graph: the same layer ranges on inputs of the same shape and dtype."""
    return tuple(
        (run[0].layer, run[-1].layer + 1, tuple(rows[0].shape), rows[0].dtype)
        for run, rows in zip(runs, inputs, strict=True)
    )


_BY_MODEL: weakref.WeakKeyDictionary[object, dict[int, StepGraphs]] = weakref.WeakKeyDictionary()


def graphs_for(model: RecurrentModel, batch_size: int) -> StepGraphs:
    """The CUDA step graphs kept with ``model`` for ``batch_size`` (made on first use, freed with the model)."""
    device = getattr(model, "device", None)
    if device is None or torch.device(device).type != "cuda":
        raise CudaGraphsError(f"CUDA graphs need a model on a CUDA device, got one on {device}")
    per_batch = _BY_MODEL.setdefault(model, {})
    if batch_size not in per_batch:
        per_batch[batch_size] = StepGraphs(model, batch_size)
    return per_batch[batch_size]


def release(model: RecurrentModel) -> None:
    """Forget the CUDA step graphs kept with ``model`` (their buffers are freed once nothing else holds them)."""
    _BY_MODEL.pop(model, None)


def _describe(state: LayerState) -> dict[str, str]:
    return {name: f"{list(t.shape)} {t.dtype}" for name, t in state.items()}
