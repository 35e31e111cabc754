"""Step capture: every step shape is captured once, replays give the eager run's bits, buffers are not reused
while an output still needs them.

On the CPU a stand-in capture records a step's work without running it and reruns it on replay: the same
static buffers, state binding, step keys and copy-outs as with CUDA graphs, checked bit for bit against
the eager executor. The tests marked ``cuda`` run real graphs.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from backend_helpers import build_model, execute, random_inputs

from rmtsched.backends.torch import cuda_graphs
from rmtsched.backends.torch.cuda_graphs import CudaGraphsError, GraphStepRunner, StepGraphs
from rmtsched.backends.torch.timing import time_schedule, warm_up
from rmtsched.errors import RunFailure
from rmtsched.sched import Cell, Schedule, Step, graph_for_tokens, make_schedule
from rmtsched.specs.model import ModelSpec

SPEC = ModelSpec(name="m", family="armt", num_layers=4, d_model=32, num_heads=4, num_kv_heads=2, mlp_dim=48,
                 vocab_size=101, segment_len=8, mem_tokens=4, mem_key_dim=8, dpfp_nu=3, dtype_bytes=4)


class RecordingCapture:
    """Records the work (runs nothing, like stream capture) and reruns it on replay; counts both."""

    def __init__(self) -> None:
        self.captures = 0

    def __call__(self, work: Callable[[], None]) -> Callable[[], None]:
        self.captures += 1
        return work


def _same(reference: list[torch.Tensor], outputs: list[torch.Tensor]) -> bool:
    return len(reference) == len(outputs) and all(torch.equal(a, b) for a, b in zip(reference, outputs, strict=True))


def _same_state(reference: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> bool:
    return reference.keys() == state.keys() and all(torch.equal(reference[k], state[k]) for k in reference)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("family", ["armt", "rmt"])
def test_replayed_steps_give_the_eager_bits(family: str, dtype: torch.dtype) -> None:
    spec = SPEC.replace(family=family)
    model = build_model(spec, seed=1, dtype=dtype)
    inputs = random_inputs(spec, 2, 9 * spec.segment_len + 3, seed=2)
    graph = graph_for_tokens(spec, inputs.shape[1])
    graphs = StepGraphs(model, 2, capture=RecordingCapture())
    for name in ("sequential", "diagonal", "greedy"):
        schedule = make_schedule(graph, name)
        eager = execute(model, inputs, schedule)
        for _ in range(2):  # the first run captures new shapes, the second replays every step
            run = execute(model, inputs, schedule, cuda_graphs=graphs)
            assert _same(eager.outputs, run.outputs), name
            assert _same_state(eager.final_state, run.final_state), name
            assert torch.equal(eager.last_hidden, run.last_hidden), name
    assert graphs.replays > 0


def test_each_step_shape_is_captured_once_and_shared() -> None:
    layers, segments = SPEC.num_layers, 7
    model = build_model(SPEC, seed=1, matmul="rows")  # no probes: this test counts steps, not bits
    inputs = random_inputs(SPEC, 1, segments * SPEC.segment_len, seed=2)
    graph = graph_for_tokens(SPEC, inputs.shape[1])
    diagonal = make_schedule(graph, "diagonal")
    capture = RecordingCapture()
    graphs = StepGraphs(model, 1, capture=capture)
    execute(model, inputs, diagonal, cuda_graphs=graphs)
    # ramp-up widths 1..L-1, the full width, ramp-down widths L-1..1: each its own shape, captured once
    assert graphs.captured == capture.captures == graphs.eager_steps == 2 * layers - 1
    assert graphs.replays == diagonal.num_steps - (2 * layers - 1)  # the full-width step after its first time
    execute(model, inputs, diagonal, cuda_graphs=graphs)
    assert graphs.captured == 2 * layers - 1 and graphs.replays == 2 * diagonal.num_steps - (2 * layers - 1)
    execute(model, inputs, make_schedule(graph, "greedy"), cuda_graphs=graphs)  # the same steps: nothing new
    assert graphs.captured == 2 * layers - 1
    execute(model, inputs, make_schedule(graph, "sequential"), cuda_graphs=graphs)
    assert graphs.captured == 2 * layers - 1 + layers - 2  # layers 0 and L-1 alone were ramp-up's and ramp-down's
    with_tail = random_inputs(SPEC, 1, segments * SPEC.segment_len + 3, seed=2)
    execute(model, with_tail, make_schedule(graph_for_tokens(SPEC, with_tail.shape[1]), "sequential"),
            cuda_graphs=graphs)
    assert graphs.captured == 3 * layers - 3 + layers  # the short tail: one more shape per layer


def _layer_by_layer(layers: int, segments: int) -> Schedule:
    """Layer 0 on every segment, then layer 1 on every segment, ...: outputs wait while their shape replays."""
    return Schedule(steps=tuple(Step(cells=(Cell(layer, segment),)) for layer in range(layers)
                                for segment in range(segments)), scheduler="layer-by-layer")


def test_an_output_waiting_for_its_consumer_survives_a_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model(SPEC, seed=3)
    inputs = random_inputs(SPEC, 1, 4 * SPEC.segment_len, seed=4)
    schedule = _layer_by_layer(SPEC.num_layers, 4)
    eager = execute(model, inputs, schedule)
    graphs = StepGraphs(model, 1, capture=RecordingCapture())
    assert _same(eager.outputs, execute(model, inputs, schedule, cuda_graphs=graphs).outputs)
    assert graphs.captured == SPEC.num_layers and graphs.replays == SPEC.num_layers * 3
    # Not vacuous: without the copy-out, replaying layer 0 overwrites segment 0's waiting output.
    monkeypatch.setattr(GraphStepRunner, "_copy_out_views", lambda self, key: None)
    assert not _same(eager.outputs, execute(model, inputs, schedule, cuda_graphs=graphs).outputs)


def test_final_state_and_given_state_are_not_shared_with_the_graphs() -> None:
    model = build_model(SPEC, seed=5)
    inputs = random_inputs(SPEC, 1, 5 * SPEC.segment_len, seed=6)
    schedule = make_schedule(graph_for_tokens(SPEC, inputs.shape[1]), "diagonal")
    graphs = StepGraphs(model, 1, capture=RecordingCapture())
    first = execute(model, inputs, schedule, cuda_graphs=graphs)
    kept = {name: tensor.clone() for name, tensor in first.final_state.items()}
    second = execute(model, inputs, schedule, cuda_graphs=graphs, state=first.final_state)  # continue the memory
    assert _same_state(kept, first.final_state)
    eager_first = execute(model, inputs, schedule)
    eager_second = execute(model, inputs, schedule, state=eager_first.final_state)
    assert _same(eager_second.outputs, second.outputs)
    assert _same_state(eager_second.final_state, second.final_state)


def test_the_warm_up_prefix_captures_every_step_shape_of_the_timed_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model(SPEC, seed=13, matmul="rows")
    graphs = StepGraphs(model, 1, capture=RecordingCapture())
    monkeypatch.setattr(cuda_graphs, "graphs_for", lambda *_: graphs)  # CPU: the recording capture stands in
    inputs = random_inputs(SPEC, 1, 9 * SPEC.segment_len + 2, seed=14)
    schedule = make_schedule(graph_for_tokens(SPEC, inputs.shape[1]), "diagonal")
    warm_up(model, inputs, schedule, cuda_graphs=True)
    captured, replays = graphs.captured, graphs.replays
    time_schedule(model, inputs, {"diagonal": schedule}, repeat=2, warmup=False, cuda_graphs=True)
    assert graphs.captured == captured and graphs.replays == replays + 2 * schedule.num_steps


def test_graphs_refuse_another_batch_model_or_device() -> None:
    model = build_model(SPEC, seed=7)
    inputs = random_inputs(SPEC, 2, 2 * SPEC.segment_len, seed=8)
    schedule = make_schedule(graph_for_tokens(SPEC, inputs.shape[1]), "diagonal")
    with pytest.raises(CudaGraphsError, match="batch size 1, got inputs of shape \\[2, 16\\]"):
        execute(model, inputs, schedule, cuda_graphs=StepGraphs(model, 1, capture=RecordingCapture()))
    with pytest.raises(CudaGraphsError, match="captured for"):
        execute(build_model(SPEC, seed=7), inputs, schedule, cuda_graphs=StepGraphs(model, 2))
    with pytest.raises(CudaGraphsError, match="need a model on a CUDA device, got one on cpu"):
        execute(model, inputs, schedule, cuda_graphs=True)


def test_a_failed_capture_is_a_run_failure_naming_the_step() -> None:
    def broken(work: Callable[[], None]) -> Callable[[], None]:
        raise RuntimeError("operation not permitted when stream is capturing")

    model = build_model(SPEC, seed=9)
    inputs = random_inputs(SPEC, 1, SPEC.segment_len, seed=10)
    schedule = make_schedule(graph_for_tokens(SPEC, inputs.shape[1]), "sequential")
    with pytest.raises(RunFailure, match=r"capturing step .* failed .*stream is capturing.*without CUDA graphs"):
        execute(model, inputs, schedule, cuda_graphs=StepGraphs(model, 1, capture=broken))


# -- real CUDA graphs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("gemm", ["auto", "rows", "batched"])
@pytest.mark.parametrize(("family", "dtype"), [("armt", torch.float32), ("armt", torch.bfloat16),
                                               ("rmt", torch.float32)])
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_replays_are_bit_identical_to_eager(family: str, dtype: torch.dtype, gemm: str) -> None:
    spec = SPEC.replace(family=family)
    model = build_model(spec, seed=11, dtype=dtype, device="cuda", matmul=gemm)
    inputs = random_inputs(spec, 2, 7 * spec.segment_len + 5, seed=12).cuda()
    graph = graph_for_tokens(spec, inputs.shape[1])
    for name in ("sequential", "diagonal"):
        schedule = make_schedule(graph, name)
        eager = execute(model, inputs, schedule)
        for _ in range(2):
            run = execute(model, inputs, schedule, cuda_graphs=True)
            assert _same(eager.outputs, run.outputs), f"{family}/{dtype}/{gemm}/{name}"
            assert _same_state(eager.final_state, run.final_state), f"{family}/{dtype}/{gemm}/{name}"
    graphs = cuda_graphs.graphs_for(model, 2)
    assert graphs.replays > 0 and isinstance(graphs.capture, cuda_graphs.CudaGraphCapture)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_timed_runs_with_cuda_graphs_replay_every_step() -> None:
    model = build_model(SPEC, seed=13, dtype=torch.bfloat16, device="cuda")
    inputs = random_inputs(SPEC, 1, 9 * SPEC.segment_len + 2, seed=14).cuda()
    schedule = make_schedule(graph_for_tokens(SPEC, inputs.shape[1]), "diagonal")
    timings = time_schedule(model, inputs, {"diagonal": schedule}, repeat=2, cuda_graphs=True)
    graphs = cuda_graphs.graphs_for(model, 1)
    assert len(timings["diagonal"].runs_s) == 2
    assert graphs.replays >= 2 * schedule.num_steps  # the warm-up prefix captured every shape: timed runs replay
