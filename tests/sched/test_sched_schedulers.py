"""Laws every built-in scheduler obeys, over random grids, rules (user DAGs included), widths and devices."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sched_strategies import BUILTIN_RULES, FAST, SCHEDULERS, THOROUGH, cell_graphs

from rmtsched.errors import GraphError, ScheduleError
from rmtsched.sched import (
    Cell,
    CellGraph,
    Schedule,
    SchedulerOptions,
    Step,
    available_schedulers,
    build_cell_graph,
    get_scheduler,
    make_schedule,
    register_scheduler,
    validate,
)
from rmtsched.sched.schedulers.pipelined import balanced_stages


@st.composite
def scheduled(draw: st.DrawFn, names: tuple[str, ...] = SCHEDULERS, **graph_kwargs: object):
    """(graph, scheduler name, options, schedule) with options each scheduler accepts."""
    graph = draw(cell_graphs(**graph_kwargs))
    name = draw(st.sampled_from(names))
    options: dict[str, object] = {"max_width": draw(st.none() | st.integers(1, graph.num_layers + 2))}
    if name == "pipelined":
        options["num_devices"] = draw(st.integers(1, graph.num_layers))
        if draw(st.booleans()):
            options["layer_costs"] = tuple(
                draw(st.lists(st.integers(1, 9), min_size=graph.num_layers, max_size=graph.num_layers))
            )
    return graph, name, options, make_schedule(graph, name, **options)


@THOROUGH
@given(scheduled())
def test_every_scheduler_output_passes_the_validator(case) -> None:
    graph, name, _, schedule = case
    validate(schedule, graph)
    assert schedule.scheduler == name


@FAST
@given(scheduled())
def test_every_cell_runs_exactly_once(case) -> None:
    graph, _, _, schedule = case
    counts = Counter(schedule.cells())
    assert set(counts) == set(graph.cells())
    assert set(counts.values()) == {1}
    assert schedule.num_cells == graph.num_cells


@FAST
@given(scheduled(names=("diagonal", "greedy")))
def test_width_never_exceeds_max_width(case) -> None:
    _, _, options, schedule = case
    if options["max_width"] is not None:
        assert schedule.max_width <= options["max_width"]


@FAST
@given(cell_graphs(rules=("layer_local",)))
def test_diagonal_has_s_plus_l_minus_1_anti_diagonal_steps_on_layer_local(graph: CellGraph) -> None:
    schedule = make_schedule(graph, "diagonal")
    assert schedule.num_steps == graph.num_segments + graph.num_layers - 1
    for t, step in enumerate(schedule.steps):
        assert {cell.layer + cell.segment for cell in step.cells} == {t}
        assert step.width == len([layer for layer in range(graph.num_layers) if 0 <= t - layer < graph.num_segments])


@FAST
@given(cell_graphs(rules=("layer_local",)), st.integers(1, 5))
def test_capped_diagonal_splits_each_anti_diagonal_into_ceil_w_over_cap_steps(graph: CellGraph, cap: int) -> None:
    uncapped = make_schedule(graph, "diagonal")
    capped = make_schedule(graph, "diagonal", max_width=cap)
    assert capped.num_steps == sum(math.ceil(step.width / cap) for step in uncapped.steps)
    assert [cell for step in capped.steps for cell in step.cells] == list(uncapped.cells())


@FAST
@given(cell_graphs(rules=("layer_local",)))
def test_greedy_equals_diagonal_on_layer_local_without_a_cap(graph: CellGraph) -> None:
    assert make_schedule(graph, "greedy").steps == make_schedule(graph, "diagonal").steps


@FAST
@given(cell_graphs(rules=("user", "global_memory")))
def test_uncapped_greedy_is_the_asap_wave_schedule_on_any_dag(graph: CellGraph) -> None:
    greedy = make_schedule(graph, "greedy")
    assert greedy.steps == make_schedule(graph, "diagonal").steps
    assert greedy.num_steps == 1 + max(graph.level(cell) for cell in graph.cells())


@FAST
@given(scheduled(rules=("global_memory",)))
def test_every_step_has_one_cell_on_global_memory(case) -> None:
    _, _, _, schedule = case
    assert {step.width for step in schedule.steps} == {1}


@FAST
@given(cell_graphs())
def test_pipelined_with_one_device_equals_sequential(graph: CellGraph) -> None:
    pipelined = make_schedule(graph, "pipelined", num_devices=1)
    assert pipelined.steps == make_schedule(graph, "sequential").steps
    assert pipelined.transfers == ()


@FAST
@given(cell_graphs(rules=BUILTIN_RULES))
def test_sequential_is_segment_major_on_builtin_rules(graph: CellGraph) -> None:
    schedule = make_schedule(graph, "sequential")
    assert [step.cells[0] for step in schedule.steps] == sorted(graph.cells(), key=lambda c: (c.segment, c.layer))


@FAST
@given(scheduled(names=("pipelined",)))
def test_pipelined_runs_each_layer_on_its_contiguous_stage(case) -> None:
    graph, _, options, schedule = case
    stages = [range(start, stop) for start, stop in schedule.options["stages"]]
    assert len(stages) == options["num_devices"] == schedule.num_devices
    assert [layer for stage in stages for layer in stage] == list(range(graph.num_layers))
    assert all(len(stage) > 0 for stage in stages)
    for step in schedule.steps:
        assert all(cell.layer in stages[step.device] for cell in step.cells)
    crossing = {(u, v) for u, v in graph.edges() if not any(u.layer in s and v.layer in s for s in stages)}
    assert {t.cell for t in schedule.transfers} == {u for u, _ in crossing}


@FAST
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 12))
def test_pipelined_layer_local_issues_cell_l_s_at_tick_s_k_plus_l(num_devices: int, k: int, num_segments: int) -> None:
    """P equal stages of k layers: device p runs segment s while p+1 runs s-1, (S + P - 1) * k ticks in all.

    Steps are issued tick by tick, devices in order within a tick, so the issue order is (tick, layer).
    """
    graph = build_cell_graph(num_devices * k, num_segments)
    schedule = make_schedule(graph, "pipelined", num_devices=num_devices)
    expected = sorted(graph.cells(), key=lambda cell: (cell.segment * k + cell.layer, cell.layer))
    assert [step.cells[0] for step in schedule.steps] == expected
    assert 1 + max(cell.segment * k + cell.layer for cell in expected) == (num_segments + num_devices - 1) * k
    assert [step.device for step in schedule.steps] == [cell.layer // k for cell in expected]


def brute_force_best_max_stage(costs: list[float], num_stages: int) -> float:
    best = math.inf
    for cuts in itertools.combinations(range(1, len(costs)), num_stages - 1):
        bounds = (0, *cuts, len(costs))
        best = min(best, max(sum(costs[a:b]) for a, b in itertools.pairwise(bounds)))
    return best


@THOROUGH
@given(st.data())
def test_balanced_stages_is_optimal_against_brute_force(data: st.DataObject) -> None:
    costs = data.draw(st.lists(st.floats(0.1, 10.0, allow_nan=False), min_size=1, max_size=9))
    num_stages = data.draw(st.integers(1, len(costs)))
    stages = balanced_stages(costs, num_stages)
    assert len(stages) == num_stages and all(len(stage) > 0 for stage in stages)
    assert [layer for stage in stages for layer in stage] == list(range(len(costs)))
    largest = max(sum(costs[layer] for layer in stage) for stage in stages)
    assert math.isclose(largest, brute_force_best_max_stage(costs, num_stages), rel_tol=1e-9)


def test_balanced_stages_follows_layer_costs() -> None:
    assert balanced_stages([1, 1, 1, 1], 2) == [range(0, 2), range(2, 4)]
    assert balanced_stages([6, 1, 1, 1, 1, 1, 1], 2) == [range(0, 1), range(1, 7)]


@pytest.mark.parametrize("name", ["sequential", "diagonal", "greedy"])
def test_single_device_schedulers_refuse_several_devices(name: str) -> None:
    graph = build_cell_graph(3, 4)
    with pytest.raises(ScheduleError, match=rf"'{name}' runs on one device, got num_devices=2"):
        make_schedule(graph, name, num_devices=2)


def test_pipelined_refuses_more_devices_than_layers_and_mismatched_costs() -> None:
    graph = build_cell_graph(3, 4)
    with pytest.raises(ScheduleError, match="cannot split 3 layers into 4"):
        make_schedule(graph, "pipelined", num_devices=4)
    with pytest.raises(ScheduleError, match="layer_costs has 2 entries for a graph of 3 layers"):
        make_schedule(graph, "pipelined", num_devices=2, layer_costs=(1.0, 2.0))
    with pytest.raises(ScheduleError, match="pipeline stages must be a positive integer, got 0"):
        balanced_stages([1.0], 0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_width": 0}, "max_width must be a positive integer or None, got 0"),
        ({"max_width": -3}, "got -3"),
        ({"max_width": 1.5}, "got 1.5"),
        ({"num_devices": 0}, "number of devices must be a positive integer, got 0"),
        ({"layer_costs": (1.0, 0.0)}, "layer_costs must all be positive"),
    ],
)
def test_scheduler_options_reject_bad_values(options: dict, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        SchedulerOptions(**options)


def test_registry_finds_builtins_refuses_unknown_names_and_accepts_user_schedulers() -> None:
    assert {"sequential", "diagonal", "pipelined", "greedy"} <= set(available_schedulers())
    with pytest.raises(ScheduleError, match=r"unknown scheduler 'nope': expected one of \["):
        get_scheduler("nope")

    @register_scheduler("test-reverse-layers")
    def reverse_layers(graph: CellGraph, options: SchedulerOptions) -> Schedule:
        order = sorted(graph.cells(), key=lambda cell: (cell.segment, cell.layer))
        return Schedule(tuple(Step((cell,)) for cell in order), scheduler="test-reverse-layers")

    graph = build_cell_graph(2, 3)
    assert "test-reverse-layers" in available_schedulers()
    schedule = make_schedule(graph, "test-reverse-layers")
    validate(schedule, graph)
    assert get_scheduler("test-reverse-layers") is reverse_layers


class _LyingRule:
    """Claims to be acyclic but makes (0, 0) and (0, 1) wait for each other."""

    name = "lying"
    acyclic_by_construction = True

    def predecessors(self, cell: Cell, num_layers: int, num_segments: int) -> tuple[Cell, ...]:
        return {Cell(0, 0): (Cell(0, 1),), Cell(0, 1): (Cell(0, 0),)}.get(cell, ())

    def level(self, cell: Cell, num_layers: int, num_segments: int) -> int | None:
        return None


@pytest.mark.parametrize(("name", "devices"), [("pipelined", 2), ("sequential", 1), ("diagonal", 1), ("greedy", 1)])
def test_a_scheduler_stops_with_an_error_naming_the_cycle_instead_of_spinning(name: str, devices: int) -> None:
    graph = build_cell_graph(2, 2, rule=_LyingRule())
    with pytest.raises(GraphError, match=r"the dependency rule 'lying' has a cycle: \(0, 1\) -> \(0, 0\) -> \(0, 1\)"):
        make_schedule(graph, name, num_devices=devices)
