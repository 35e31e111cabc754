"""Laws of the event engine and the closed forms: they agree, respect bounds, and model pipelines right."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from random_dags import random_valid_schedule
from sim_helpers import random_dag, synthetic_workload, unit_hardware

from rmtsched.errors import ScheduleError
from rmtsched.sched import Cell, CellGraph, Schedule, SchedulerOptions, Step, Transfer, make_schedule, split_segments
from rmtsched.sim import CostModel, analytic_simulate, simulate, workload_from_spec
from rmtsched.sim.memory import resident_bytes
from rmtsched.sim.result import SimResult
from rmtsched.specs.hardware import load_hardware_spec
from rmtsched.specs.model import load_model_spec

SETTINGS = settings(max_examples=40, deadline=None)
NAMED = ("sequential", "diagonal", "pipelined")


@st.composite
def grids(draw: st.DrawFn, rules: tuple[str, ...] = ("layer_local", "global_memory")) -> CellGraph:
    layers = draw(st.integers(1, 7))
    segment_len = draw(st.integers(1, 16))
    tokens = draw(st.integers(1, 14 * segment_len))
    return CellGraph(layers, split_segments(tokens, segment_len), draw(st.sampled_from(rules)))


@st.composite
def cases(draw: st.DrawFn) -> tuple[CellGraph, CostModel, str, SchedulerOptions]:
    graph = draw(grids())
    workload = synthetic_workload(graph.num_layers, draw(st.integers(1, 9)), draw(st.integers(0, 50)))
    hardware = unit_hardware(draw(st.integers(0, 20)), draw(st.integers(0, 40)), draw(st.integers(0, 30)))
    scheduler = draw(st.sampled_from(NAMED))
    devices = draw(st.integers(1, graph.num_layers)) if scheduler == "pipelined" else 1
    max_width = draw(st.none() | st.integers(1, graph.num_layers)) if scheduler == "diagonal" else None
    return graph, CostModel(workload, hardware), scheduler, SchedulerOptions(max_width=max_width, num_devices=devices)


def des(graph: CellGraph, cost: CostModel, scheduler: str, options: SchedulerOptions) -> SimResult:
    schedule = make_schedule(graph, scheduler, max_width=options.max_width, num_devices=options.num_devices)
    return simulate(schedule, graph, cost)


def assert_same(event: SimResult, closed: SimResult, rel: float = 1e-9) -> None:
    sizes = (event.num_steps, event.num_cells, event.num_devices)
    assert sizes == (closed.num_steps, closed.num_cells, closed.num_devices)
    assert event.makespan_s == pytest.approx(closed.makespan_s, rel=rel)
    assert event.busy_s == pytest.approx(closed.busy_s, rel=rel)
    assert event.utilization == pytest.approx(closed.utilization, rel=rel, abs=1e-12)
    assert event.peak_memory_bytes == pytest.approx(closed.peak_memory_bytes, rel=rel)


@SETTINGS
@given(cases())
def test_des_equals_analytic_on_integer_costs(case: tuple) -> None:
    """Exact arithmetic: makespan, busy time and peak memory per device all agree."""
    graph, cost, scheduler, options = case
    assert_same(des(graph, cost, scheduler, options), analytic_simulate(scheduler, graph, cost, options))


@SETTINGS
@given(
    model=st.sampled_from(["armt-tiny", "rmt-tiny", "armt-llama-1b"]),
    hardware=st.sampled_from(["h100-sxm", "a100-80gb", "cpu-generic"]),
    segments=st.integers(1, 40),
    remainder=st.floats(0.0, 1.0),
    scheduler=st.sampled_from(NAMED),
    data=st.data(),
)
def test_des_equals_analytic_on_real_models(model, hardware, segments, remainder, scheduler, data) -> None:
    spec = load_model_spec(model)
    cost = CostModel(workload_from_spec(spec), load_hardware_spec(hardware))
    tokens = (segments - 1) * spec.segment_len + max(1, round(remainder * spec.segment_len))
    graph = CellGraph(spec.num_layers, split_segments(tokens, spec.segment_len), spec.dependency_rule)
    devices = data.draw(st.integers(1, min(4, spec.num_layers))) if scheduler == "pipelined" else 1
    max_width = data.draw(st.none() | st.integers(1, spec.num_layers)) if scheduler == "diagonal" else None
    options = SchedulerOptions(max_width=max_width, num_devices=devices)
    event, closed = des(graph, cost, scheduler, options), analytic_simulate(scheduler, graph, cost, options)
    assert_same(event, closed)


def critical_path_s(graph: CellGraph, cost: CostModel) -> float:
    finish: dict[Cell, float] = {}
    for cell in graph.topological_order():
        ready = max((finish[pred] for pred in graph.predecessors(cell)), default=0.0)
        finish[cell] = ready + cost.cell_time_s(graph.tokens(cell))
    return max(finish.values())


@SETTINGS
@given(
    graph=grids(("layer_local", "global_memory")),
    scheduler=st.sampled_from(["sequential", "diagonal", "pipelined", "greedy"]),
    hardware=st.sampled_from(["h100-sxm", "cpu-generic"]),
    data=st.data(),
)
def test_makespan_respects_critical_path_and_work_bounds(graph, scheduler, hardware, data) -> None:
    cost = CostModel(synthetic_workload(graph.num_layers, 1000, 10**6), load_hardware_spec(hardware))
    devices = data.draw(st.integers(1, graph.num_layers)) if scheduler == "pipelined" else 1
    max_width = data.draw(st.none() | st.integers(1, 4)) if scheduler in ("diagonal", "greedy") else None
    result = simulate(make_schedule(graph, scheduler, max_width=max_width, num_devices=devices), graph, cost)
    assert result.makespan_s >= critical_path_s(graph, cost) * (1 - 1e-12)
    assert result.makespan_s >= sum(result.busy_s) / result.num_devices * (1 - 1e-12)
    assert 0.0 <= result.utilization <= 1.0
    assert all(0.0 <= u <= 1.0 for u in result.device_utilization)
    assert all(busy <= result.makespan_s * (1 + 1e-12) for busy in result.busy_s)
    assert 0.0 <= result.bubble_fraction <= 1.0


@settings(max_examples=25, deadline=None)
@given(stages=st.integers(1, 6), layers_per_stage=st.integers(1, 4), segments=st.integers(1, 40))
def test_pipeline_bubble_with_uniform_costs_and_free_links(stages, layers_per_stage, segments) -> None:
    layers = stages * layers_per_stage
    graph = CellGraph(layers, (8,) * segments)
    cost = CostModel(synthetic_workload(layers, 3, 2), unit_hardware(launch=1, link_free=True))
    options = SchedulerOptions(num_devices=stages)
    expected = (stages - 1) / (segments + stages - 1)
    cell = cost.cell_time_s(8)
    for result in (des(graph, cost, "pipelined", options), analytic_simulate("pipelined", graph, cost, options)):
        assert result.bubble_fraction == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert result.makespan_s == pytest.approx((segments + stages - 1) * layers_per_stage * cell, rel=1e-9)


def test_slow_links_delay_consumers_until_transfers_land() -> None:
    graph = CellGraph(4, (8,) * 5)
    cost = CostModel(synthetic_workload(4, 3, 2, hidden_per_token=10), unit_hardware(latency=50))
    schedule = make_schedule(graph, "pipelined", num_devices=2)
    result = simulate(schedule, graph, cost)
    timeline = result.timeline
    step_of = {cell: k for k, step in enumerate(schedule.steps) for cell in step.cells}
    assert len(timeline.transfers) == 5
    for record in timeline.transfers:
        assert record.end_s - record.start_s == 50 + 10 * 8  # latency + bytes / (1 B/s)
        assert record.start_s >= timeline.step_end_s[step_of[record.cell]]
        consumer = step_of[Cell(record.cell.layer + 1, record.cell.segment)]
        assert timeline.step_start_s[consumer] >= record.end_s
    free = simulate(schedule, graph, CostModel(cost.workload, unit_hardware(link_free=True)))
    assert result.makespan_s > free.makespan_s


def test_a_link_carries_one_transfer_at_a_time() -> None:
    # the link (130 s per transfer) is the bottleneck: transfers queue back to back
    graph = CellGraph(2, (8,) * 6)
    cost = CostModel(synthetic_workload(2, 1, 0, hidden_per_token=10), unit_hardware(latency=50))
    result = simulate(make_schedule(graph, "pipelined", num_devices=2), graph, cost)
    spans = sorted((t.start_s, t.end_s) for t in result.timeline.transfers)
    assert all(nxt[0] >= prev[1] for prev, nxt in itertools.pairwise(spans))
    assert result.makespan_s == pytest.approx(analytic_simulate(
        "pipelined", graph, cost, SchedulerOptions(num_devices=2)).makespan_s, rel=1e-12)


def test_simulation_is_deterministic() -> None:
    spec = load_model_spec("armt-tiny")
    cost = CostModel(workload_from_spec(spec), load_hardware_spec("cpu-generic"))
    graph = CellGraph(spec.num_layers, split_segments(1000, 64))
    schedule = make_schedule(graph, "pipelined", num_devices=3)
    first, second = simulate(schedule, graph, cost), simulate(schedule, graph, cost)
    assert list(first.timeline.events()) == list(second.timeline.events())
    assert first.peak_memory_bytes == second.peak_memory_bytes


def test_event_log_has_two_events_per_step_and_transfer_in_time_order() -> None:
    graph = CellGraph(3, (8,) * 4)
    cost = CostModel(synthetic_workload(3, 2, 1), unit_hardware(latency=3))
    schedule = make_schedule(graph, "pipelined", num_devices=3)
    result = simulate(schedule, graph, cost)
    events = list(result.timeline.events())
    assert len(events) == 2 * schedule.num_steps + 2 * len(schedule.transfers)
    assert [e.time_s for e in events] == sorted(e.time_s for e in events)
    assert {e.kind for e in events} == {"step_start", "step_end", "transfer_start", "transfer_end"}


def test_sequential_peak_memory_is_resident_plus_one_cell() -> None:
    workload = synthetic_workload(3, 2, 1, hidden_per_token=3)
    cost = CostModel(workload, unit_hardware())
    graph = CellGraph(3, (8, 8, 5))
    result = simulate(make_schedule(graph, "sequential"), graph, cost)
    resident = 3 * (100 + 7) + 11 + 13  # weights + state per layer, embeddings, head
    assert result.peak_memory_bytes == (resident + 5 * 8 + 3 * 8,)  # largest working set + its input


def test_diagonal_keeps_a_wave_of_hidden_states_and_a_width_cap_bounds_working_sets() -> None:
    workload = synthetic_workload(4, 2, 1, hidden_per_token=3)
    cost = CostModel(workload, unit_hardware())
    graph = CellGraph(4, (8,) * 10)
    sequential = simulate(make_schedule(graph, "sequential"), graph, cost).peak_memory_bytes[0]
    diagonal = simulate(make_schedule(graph, "diagonal"), graph, cost).peak_memory_bytes[0]
    capped = simulate(make_schedule(graph, "diagonal", max_width=1), graph, cost).peak_memory_bytes[0]
    resident = 4 * 107 + 24
    assert diagonal == resident + 4 * (40 + 24)  # a full wave: four working sets and four inputs
    assert sequential < capped < diagonal  # width 1: one working set, but the wave's hidden states stay


def test_a_wait_cycle_is_reported_not_hung() -> None:
    graph = CellGraph(2, (1, 1))
    steps = (Step((Cell(1, 0),), 0), Step((Cell(0, 1),), 0), Step((Cell(1, 1),), 1), Step((Cell(0, 0),), 1))
    transfers = (Transfer(Cell(0, 0), 1, 0), Transfer(Cell(0, 1), 0, 1), Transfer(Cell(1, 0), 0, 1))
    schedule = Schedule(steps, transfers, num_devices=2)
    cost = CostModel(synthetic_workload(2, 1, 1), unit_hardware())
    with pytest.raises(ScheduleError, match="never finished"):
        simulate(schedule, graph, cost, check=False)
    with pytest.raises(ScheduleError):
        simulate(schedule, graph, cost)


def test_user_dags_simulate_with_the_des_and_are_refused_by_closed_forms() -> None:
    graph = CellGraph(3, (4,) * 4, lambda cell, layers, segments: [(cell.layer, s) for s in range(cell.segment)])
    cost = CostModel(synthetic_workload(3, 2, 1), unit_hardware())
    result = simulate(make_schedule(graph, "greedy"), graph, cost)
    assert result.makespan_s > 0 and math.isfinite(result.makespan_s)
    with pytest.raises(ScheduleError, match="des engine"):
        analytic_simulate("greedy", graph, cost)
    with pytest.raises(ScheduleError, match="des engine"):
        analytic_simulate("diagonal", graph, cost)


def test_closed_forms_cover_a_billion_token_grid() -> None:
    spec = load_model_spec("armt-llama-8b")
    cost = CostModel(workload_from_spec(spec), load_hardware_spec("h100-sxm"))
    graph = CellGraph(spec.num_layers, split_segments(10**9, spec.segment_len))  # ~31M cells
    for scheduler, options in (("sequential", {}), ("diagonal", {"max_width": 5}), ("pipelined", {"num_devices": 4})):
        result = analytic_simulate(scheduler, graph, cost, SchedulerOptions(**options))
        assert result.num_cells == graph.num_cells and result.makespan_s > 0


@SETTINGS
@given(
    layers=st.integers(1, 6),
    segments=st.integers(1, 8),
    devices=st.integers(1, 4),
    user_rule=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_valid_multi_device_schedule_runs_in_order(layers, segments, devices, user_rule, seed) -> None:
    rng = random.Random(seed)
    graph = random_dag(layers, segments, rng) if user_rule else CellGraph(layers, (4,) * segments)
    schedule = random_valid_schedule(graph, rng, devices)
    cost = CostModel(synthetic_workload(layers, 2, 3), unit_hardware(launch=1, half=2, latency=rng.randint(0, 9)))
    result = simulate(schedule, graph, cost)
    timeline = result.timeline
    assert result.makespan_s >= critical_path_s(graph, cost) * (1 - 1e-12)
    assert 0.0 <= result.utilization <= 1.0
    for device in range(devices):  # a device runs its steps one after another, in schedule order
        spans = [(timeline.step_start_s[k], timeline.step_end_s[k]) for k, s in enumerate(schedule.steps)
                 if s.device == device]
        assert all(nxt[0] >= prev[1] for prev, nxt in itertools.pairwise(spans))
    step_of = {cell: k for k, step in enumerate(schedule.steps) for cell in step.cells}
    arrival = {(t.cell, t.dst_device): t.end_s for t in timeline.transfers}
    for k, step in enumerate(schedule.steps):
        for cell in step.cells:
            for pred in graph.predecessors(cell):
                ready = arrival.get((pred, step.device), timeline.step_end_s[step_of[pred]])
                assert timeline.step_start_s[k] >= ready
    resident = sum(device_resident(cost, schedule, d) for d in range(devices))
    assert sum(result.peak_memory_bytes) >= resident


def device_resident(cost: CostModel, schedule: Schedule, device: int) -> float:
    layers = {cell.layer for step in schedule.steps if step.device == device for cell in step.cells}
    return resident_bytes(cost, layers, 4)
