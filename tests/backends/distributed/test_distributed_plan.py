"""Rank plans (no processes): who owns which layers, who sends what to whom in which order, the one-rank
executor against the naive reference loop for every single-device scheduler, the sink's hash, and whom a
stall is blamed on."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest
import torch
from dist_toy_model import ToyRecurrentModel, reference_run

from rmtsched.backends.distributed._board import RankPosition
from rmtsched.backends.distributed.executor import StageExecutor
from rmtsched.backends.distributed.launch import stopped_rank
from rmtsched.backends.distributed.plan import build_plans, sorted_step
from rmtsched.backends.distributed.sink import SegmentSink, outputs_sha256
from rmtsched.backends.torch.executor import OrderedDelivery
from rmtsched.errors import ScheduleError
from rmtsched.sched import (
    Cell,
    Schedule,
    Step,
    Transfer,
    build_cell_graph,
    graph_for_tokens,
    make_schedule,
)


def toy(num_layers: int = 4, global_memory: bool = False, dtype: torch.dtype = torch.float64) -> ToyRecurrentModel:
    return ToyRecurrentModel(
        num_layers=num_layers, d_model=8, segment_len=5, mem_tokens=2, vocab_size=31,
        global_memory=global_memory, seed=3, dtype=dtype, device=torch.device("cpu"),
    )  # fmt: skip


def graph_for(model: ToyRecurrentModel, num_tokens: int):
    return graph_for_tokens(model, num_tokens)


def test_pipelined_plan_gives_each_rank_one_stage_and_a_channel_in_segment_order():
    graph = graph_for(toy(num_layers=4), 23)
    plans = build_plans(make_schedule(graph, "pipelined", num_devices=2), graph, 2, uses_previous_output=False)
    assert [plan.layers for plan in plans] == [range(0, 2), range(2, 4)]
    assert plans[0].sends == {Cell(1, s): (1,) for s in range(5)}
    assert plans[1].recvs == {0: tuple(Cell(1, s) for s in range(5))}
    assert plans[0].recvs == {} and plans[1].sends == {}


def test_global_memory_plan_sends_the_last_layer_back_to_rank_zero():
    graph = graph_for(toy(num_layers=4, global_memory=True), 23)
    plans = build_plans(make_schedule(graph, "pipelined", num_devices=2), graph, 2, uses_previous_output=True)
    assert plans[1].sends[Cell(3, 0)] == (0,)
    assert plans[0].recvs[1] == tuple(Cell(3, s) for s in range(4))  # segment 4's output feeds nothing


def test_more_processes_than_layers_fails_fast():
    graph = graph_for(toy(num_layers=2), 10)
    schedule = make_schedule(graph, "sequential")
    with pytest.raises(ScheduleError, match=r"cannot run 2 layer.* on 3 processes"):
        build_plans(schedule, graph, 3, uses_previous_output=False)


def test_schedule_for_another_world_size_is_refused():
    graph = graph_for(toy(num_layers=4), 10)
    with pytest.raises(ScheduleError, match=r"for 2 device.* but the run has 4"):
        build_plans(make_schedule(graph, "pipelined", num_devices=2), graph, 4, uses_previous_output=False)


def test_a_layer_split_over_two_devices_is_refused():
    graph = build_cell_graph(2, 2)
    steps = (Step((Cell(0, 0),), 0), Step((Cell(1, 0),), 1), Step((Cell(0, 1),), 1), Step((Cell(1, 1),), 1))
    transfers = (Transfer(Cell(0, 0), 0, 1),)
    with pytest.raises(ScheduleError, match="layer 0 runs on device 0 and on device 1"):
        build_plans(Schedule(steps, transfers, num_devices=2), graph, 2, uses_previous_output=False)


def test_a_model_reading_its_previous_output_needs_the_transfer():
    graph = graph_for(toy(num_layers=2), 10)  # layer-local DAG: no (1, 0) -> (0, 1) edge, so no transfer
    with pytest.raises(ScheduleError, match=r"reads the output of \(1, 0\) on device 1.*no transfer"):
        build_plans(make_schedule(graph, "pipelined", num_devices=2), graph, 2, uses_previous_output=True)


def test_steps_are_sorted_by_layer_and_a_layer_runs_once_per_step():
    assert sorted_step((Cell(4, 0), Cell(0, 2), Cell(2, 0)), 0) == (Cell(0, 2), Cell(2, 0), Cell(4, 0))
    with pytest.raises(ScheduleError, match="step 7 runs layer 1 twice"):
        sorted_step((Cell(1, 0), Cell(1, 1)), 7)


@pytest.mark.parametrize("scheduler", ["sequential", "diagonal", "greedy"])
@pytest.mark.parametrize("global_memory", [False, True])
def test_one_rank_executor_is_bit_exact_with_the_reference_loop(scheduler, global_memory):
    model = toy(num_layers=3, global_memory=global_memory, dtype=torch.float32)
    inputs = torch.randint(31, (2, 23), generator=torch.Generator().manual_seed(1))
    expected, expected_state = reference_run(model, inputs)
    graph = graph_for(model, 23)
    (plan,) = build_plans(make_schedule(graph, scheduler), graph, 1, uses_previous_output=global_memory)
    sink = SegmentSink(keep_outputs=True)
    _, state = StageExecutor(model, plan, state_row=0, link_factory=None).run(inputs, sink)
    assert all(torch.equal(sink.outputs[s], expected[s]) for s in range(graph.num_segments))
    assert torch.equal(state["h"], expected_state["h"])
    assert sink.sha256() == outputs_sha256(expected)


def test_sink_hashes_in_segment_order_whatever_the_arrival_order():
    outputs = [torch.full((1, 2), float(s)) for s in range(3)]
    sink = SegmentSink(keep_outputs=True)
    delivery = OrderedDelivery(SimpleNamespace(segment_output=lambda hidden: hidden), sink, collect=False)
    for segment in (2, 0, 1):
        delivery.add(segment, outputs[segment])
    assert sink.sha256() == outputs_sha256(outputs) and sink.num_segments == 3
    assert all(torch.equal(sink.outputs[s], outputs[s]) for s in range(3))
    assert outputs_sha256(outputs) != outputs_sha256(outputs[::-1])


def test_the_sink_hash_is_the_hash_rmtsched_run_prints():
    """One implementation: independent sha256 of each output's native bytes, bf16 included."""
    outputs = [torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(s)).to(torch.bfloat16) for s in range(2)]
    outputs.append(torch.randn(4, 3, dtype=torch.float64).t())  # non-contiguous: hashed in row-major order
    expected = hashlib.sha256(b"".join(o.contiguous().view(torch.uint8).numpy().tobytes() for o in outputs))
    assert outputs_sha256(outputs) == expected.hexdigest()


def position(rank: int, phase: str, peer: int = -1, seconds_ago: float = 5.0) -> RankPosition:
    return RankPosition(rank, seconds_ago, step=3, phase=phase, peer=peer, cell=Cell(rank, 0))


@pytest.mark.parametrize(
    ("positions", "blamed"),
    [
        ([position(0, "barrier"), position(1, "compute")], 1),  # a rank at a barrier is never the one that stopped
        ([position(0, "join"), position(1, "setup"), position(2, "join")], 1),
        ([position(0, "recv", peer=2), position(1, "compute"), position(2, "compute", seconds_ago=1.0)], 2),
        ([position(0, "compute", seconds_ago=1.0), position(1, "compute", seconds_ago=9.0)], 1),
        ([position(0, "recv", peer=1), position(1, "send", peer=0, seconds_ago=9.0)], 1),  # all wait: oldest
    ],
)
def test_a_stall_is_blamed_on_a_rank_that_is_not_waiting_and_is_waited_on(positions, blamed):
    assert stopped_rank(positions).rank == blamed
