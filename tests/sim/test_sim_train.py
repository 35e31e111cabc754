"""Training-step simulation: times and memory worked out by hand on integer costs, and laws on real models.

Synthetic workload (sim_helpers): a cell of t tokens runs a matmul of 2t + 3 FLOPs and a vector op of t
FLOPs on unit hardware with a launch of 1 s, so a width-w step takes 2 + w (3t + 3) seconds; it keeps
(5t + 2t) / 2 bytes for its backward, checkpoints its 3t-byte input plus the 7-byte state, and runs with a
5t-byte working set (plus its 3t-byte input on layer 0).
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from random_train_schedules import random_train_schedule
from sim_helpers import synthetic_workload, unit_hardware

from rmtsched.errors import ScheduleError
from rmtsched.sched import TrainGraph, build_cell_graph, graph_for_tokens, make_train_schedule
from rmtsched.sim import CostModel, workload_from_spec
from rmtsched.sim.train import BACKWARD_FACTOR, loss_s, simulate_train
from rmtsched.specs.hardware import load_hardware_spec
from rmtsched.specs.model import load_model_spec

TOKENS = 4
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def synthetic(layers: int, segments: int, hidden_per_token: int = 3, latency: int = 0) -> tuple[TrainGraph, CostModel]:
    graph = TrainGraph(build_cell_graph(layers, segment_tokens=(TOKENS,) * segments))
    workload = synthetic_workload(layers, per_token=2, fixed=3, hidden_per_token=hidden_per_token)
    return graph, CostModel(workload, unit_hardware(launch=1, latency=latency))


def step_s(width: int) -> float:
    return 2 + width * (3 * TOKENS + 3)


def test_diagonal_training_step_by_hand() -> None:
    graph, cost = synthetic(2, 3)
    result = simulate_train(make_train_schedule(graph, "diagonal"), graph, cost)
    forward = step_s(1) + step_s(2) + step_s(2) + step_s(1)  # waves of widths 1, 2, 2, 1
    assert result.phase_s == {"F": forward, "R": 0.0, "B": 2 * forward}
    assert result.makespan_s == 3 * forward
    # Every cell keeps 14 bytes until its B. Forward step 2 (cells (0, 2), (1, 1)) adds 2 x 14 to the 3 x 14
    # held and runs with two 20-byte working sets plus layer 0's 12-byte input: 122, the peak.
    assert result.held_bytes.tolist() == [46, 94, 122, 104, 104, 122, 94, 46]
    weights_and_state = 2 * (100 + 7) + 11 + 13
    assert result.resident_bytes == (weights_and_state + 2 * 100,)  # plus one gradient per layer weight
    assert result.peak_memory_bytes == result.resident_bytes[0] + 122


def test_sequential_training_costs_three_forward_passes_of_single_cells() -> None:
    graph, cost = synthetic(3, 4)
    result = simulate_train(make_train_schedule(graph, "sequential"), graph, cost)
    assert result.makespan_s == 3 * 12 * step_s(1)


def test_recomputation_costs_forward_time_and_saves_memory_when_checkpoints_are_small() -> None:
    graph, cost = synthetic(3, 6, hidden_per_token=0)  # a checkpoint is the 7-byte state, a stash 14 bytes
    full = simulate_train(make_train_schedule(graph, "diagonal"), graph, cost)
    capped = simulate_train(make_train_schedule(graph, "checkpointed", memory_budget=4), graph, cost)
    schedule = make_train_schedule(graph, "checkpointed", memory_budget=4)
    rebuilt = [step for step in schedule.steps if step.phase.value == "R"]
    assert capped.phase_s["R"] == sum(step_s(step.width) for step in rebuilt)
    assert capped.phase_s["F"] == full.phase_s["F"] and capped.phase_s["B"] == full.phase_s["B"]
    assert capped.peak_memory_bytes < full.peak_memory_bytes


@FAST
@given(layers=st.integers(1, 4), segments=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_any_schedule_takes_the_sum_of_its_steps_and_never_holds_less_than_nothing(layers, segments, seed) -> None:
    graph, cost = synthetic(layers, segments)
    schedule = random_train_schedule(graph, random.Random(seed))
    result = simulate_train(schedule, graph, cost)
    factor = {"F": 1, "R": 1, "B": 2}
    assert result.makespan_s == sum(factor[step.phase.value] * step_s(step.width) for step in schedule.steps)
    assert result.held_bytes.min() >= 20  # at least the running step's working set


def test_on_armt_small_diagonal_beats_sequential_and_checkpointing_caps_memory() -> None:
    spec = load_model_spec("armt-small")
    graph = TrainGraph(graph_for_tokens(spec, 64 * spec.segment_len))
    cost = CostModel(workload_from_spec(spec), load_hardware_spec("h200"))
    results = {
        name: simulate_train(make_train_schedule(graph, name, **options), graph, cost)
        for name, options in (("sequential", {}), ("diagonal", {}), ("checkpointed", {"memory_budget": 48}))
    }
    assert results["diagonal"].makespan_s < results["sequential"].makespan_s
    assert results["checkpointed"].makespan_s > results["diagonal"].makespan_s
    assert results["checkpointed"].peak_memory_bytes < results["diagonal"].peak_memory_bytes / 4


def test_mismatched_workload_and_bad_factor_are_refused() -> None:
    graph, cost = synthetic(2, 2)
    schedule = make_train_schedule(graph, "diagonal")
    other = TrainGraph(build_cell_graph(3, 2))
    with pytest.raises(ScheduleError, match="graph has 3 layers but the workload 'synthetic' has 2"):
        simulate_train(make_train_schedule(other, "diagonal"), other, cost)
    with pytest.raises(ScheduleError, match=r"backward_factor must be positive, got -1\.0"):
        simulate_train(schedule, graph, cost, backward_factor=-1.0)


def test_pipelined_training_waits_for_transfers_between_devices_by_hand() -> None:
    graph, cost = synthetic(2, 1, latency=5)  # links: 5 s latency, 1 byte/s; a cell's hidden states: 12 bytes
    result = simulate_train(make_train_schedule(graph, "pipelined", num_devices=2), graph, cost)
    one, hop = step_s(1), 5 + 12
    # F(0,0) on device 0; F(1,0) on device 1 after a hop; B(1,0) right after; B(0,0) after the hop back.
    assert result.step_start_s.tolist() == [0, one + hop, 2 * one + hop, 4 * one + 2 * hop]
    assert result.makespan_s == 6 * one + 2 * hop  # a backward step costs two forward ones
    assert result.resident_bytes == (100 + 7 + 11 + 100, 100 + 7 + 13 + 100)  # embeddings / head on their ends
    assert len(result.device_peak_memory_bytes) == 2


def test_each_segments_loss_is_costed_once_per_pass_on_its_last_layer_cell() -> None:
    """The LM head and cross-entropy run in F (and R) and, backward_factor times, in B of last-layer cells."""
    spec = load_model_spec("armt-small")
    graph = TrainGraph(graph_for_tokens(spec, 4 * spec.segment_len))
    hardware = load_hardware_spec("cpu-generic")
    with_loss = CostModel(workload_from_spec(spec), hardware)
    without = CostModel(dataclasses.replace(workload_from_spec(spec), loss_kernels=None), hardware)
    schedule = make_train_schedule(graph, "sequential")
    extra = simulate_train(schedule, graph, with_loss).makespan_s - simulate_train(schedule, graph, without).makespan_s
    per_segment = loss_s(with_loss, spec.segment_len)
    assert per_segment > 0
    assert extra == pytest.approx(4 * per_segment * (1 + BACKWARD_FACTOR), rel=1e-9)
    lm_head = 2 * spec.segment_len * spec.d_model * spec.vocab_size  # the dominant GEMM
    assert per_segment > lm_head / hardware.matmul_peak_flops_per_s(spec.dtype_bytes)


@pytest.mark.parametrize("factor", [0.0, -1.0, float("nan"), float("inf")])
def test_a_backward_factor_that_is_not_finite_and_positive_is_refused(factor: float) -> None:
    graph, cost = synthetic(2, 3)
    with pytest.raises(ScheduleError, match=r"backward_factor must be positive, got .* finite number > 0"):
        simulate_train(make_train_schedule(graph, "sequential"), graph, cost, backward_factor=factor)
