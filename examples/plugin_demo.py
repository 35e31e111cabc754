"""The demo both example plug-ins run: execute two schedules, compare bits, simulate both.

It is the whole "free" tool chain in a few lines: the cell DAG from the model's dependency rule, the
registered schedulers, the executor (``execute``), and the simulator fed by the model's ``cell_kernels``.
"""

from __future__ import annotations

import torch

from rmtsched.backends.protocol import RecurrentModel
from rmtsched.backends.torch import execute
from rmtsched.sched import CellGraph, build_cell_graph, make_schedule, split_segments
from rmtsched.sim import CostModel, Workload, analytic_simulate, simulate, workload_from_model
from rmtsched.specs.hardware import load_hardware_spec

SCHEDULES = ("sequential", "diagonal")


def run_and_compare(model: RecurrentModel, num_tokens: int, vocab_size: int, batch: int = 2) -> CellGraph:
    """Run ``model`` on random tokens under both schedules; print whether outputs and states are bit-equal."""
    tokens = torch.randint(0, vocab_size, (batch, num_tokens), generator=torch.Generator().manual_seed(1))
    segment_tokens = split_segments(num_tokens, model.segment_len)
    graph = build_cell_graph(model.num_layers, segment_tokens=segment_tokens, rule=model.dependency_rule)
    schedules = {name: make_schedule(graph, name) for name in SCHEDULES}
    for schedule in schedules.values():  # warm-up: RowMatmul probes each new GEMM layout once per process
        execute(model, tokens, schedule)
    runs = {name: execute(model, tokens, schedule) for name, schedule in schedules.items()}
    reference, diagonal = runs["sequential"], runs["diagonal"]
    same_outputs = all(torch.equal(a, b) for a, b in zip(reference.outputs, diagonal.outputs, strict=True))
    same_state = all(torch.equal(value, diagonal.final_state[key]) for key, value in reference.final_state.items())
    print(f"{graph.num_segments} segments ({segment_tokens[-1]} tokens in the last) x {model.num_layers} layers: "
          f"diagonal == sequential bit for bit: outputs {same_outputs}, final state {same_state}")
    for name, run in runs.items():
        stats = run.stats
        print(f"  {name:10s} {stats.steps:4d} steps, {stats.forward_calls:4d} forward calls, "
              f"{stats.wall_s * 1e3:7.1f} ms")
    return graph


def predict(label: str, graph: CellGraph, cost: CostModel) -> None:
    """Print the simulated makespan of both schedules (event engine) and the diagonal closed form."""
    times = {name: simulate(make_schedule(graph, name), graph, cost).makespan_s for name in SCHEDULES}
    closed = analytic_simulate("diagonal", graph, cost).makespan_s
    print(f"  predicted, {label}: sequential {times['sequential'] * 1e3:.2f} ms, diagonal "
          f"{times['diagonal'] * 1e3:.2f} ms (closed form {closed * 1e3:.2f} ms), "
          f"speed-up {times['sequential'] / times['diagonal']:.2f}x")


def demo(model: RecurrentModel, num_tokens: int, vocab_size: int, what_if: Workload, what_if_tokens: int,
         what_if_segment_len: int) -> None:
    """Execute and compare ``model`` on CPU, simulate it on a generic CPU (fp32), and simulate ``what_if``
    (the same architecture at a large size, from its kernel list alone: no weights needed) on an H100."""
    torch.set_num_threads(1)  # a tiny model: intra-op threads only add overhead (and stall on a busy host)
    graph = run_and_compare(model, num_tokens, vocab_size)
    name = type(model).__name__
    predict(f"{name} on cpu-generic", graph, CostModel(workload_from_model(model, name=name, dtype_bytes=4),
                                                       load_hardware_spec("cpu-generic")))
    big_segments = split_segments(what_if_tokens, what_if_segment_len)
    big_graph = build_cell_graph(what_if.num_layers, segment_tokens=big_segments, rule=model.dependency_rule)
    predict(f"{what_if.name}, {what_if_tokens} tokens on h100-sxm", big_graph,
            CostModel(what_if, load_hardware_spec("h100-sxm")))
