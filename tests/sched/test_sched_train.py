"""The training DAG, its schedule IR and validator: edges written out by hand, JSON round trips, rejections.

The expected backward edges are transcribed from the design notes' dependency table (not derived from the
code under test): B(l, s) waits for F(l, s), B(l+1, s) and, through the memory, B(l, s+1); global memory
adds B(0, s+1) -> B(L-1, s); truncation to the last k segments drops memory edges into segments < S-k+1.
"""

from __future__ import annotations

import json
import random

import pytest
from grid_text import parse_grid
from hypothesis import given
from hypothesis import strategies as st
from random_train_schedules import random_train_schedule
from sched_strategies import FAST, cell_graphs

from rmtsched.errors import GraphError, ScheduleError
from rmtsched.sched import (
    Cell,
    Phase,
    TrainCell,
    TrainGraph,
    TrainSchedule,
    TrainStep,
    build_cell_graph,
    make_train_schedule,
    validate_train,
)
from rmtsched.sched.train_schedule import TrainTransfer
from rmtsched.sched.validate import (
    DependencyError,
    DuplicateCellError,
    InvalidScheduleError,
    MissingCellError,
    MissingTransferError,
    UnknownCellError,
)

F, R, B = Phase.FORWARD, Phase.RECOMPUTE, Phase.BACKWARD


def expected_backward_preds(layer: int, segment: int, num_layers: int, num_segments: int, rule: str,
                            truncation: int | None) -> set[TrainCell]:
    first_kept = 0 if truncation is None else num_segments - truncation + 1
    preds = {TrainCell(F, layer, segment)}
    if layer + 1 < num_layers:
        preds.add(TrainCell(B, layer + 1, segment))
    if segment + 1 < num_segments and segment + 1 >= first_kept:
        preds.add(TrainCell(B, layer, segment + 1))
        if rule == "global_memory" and layer == num_layers - 1 and num_layers > 1:
            preds.add(TrainCell(B, 0, segment + 1))
    return preds


@pytest.mark.parametrize("rule", ["layer_local", "global_memory"])
@pytest.mark.parametrize("truncation", [None, 1, 2, 5, 9])
def test_backward_edges_match_the_written_out_rule(rule: str, truncation: int | None) -> None:
    num_layers, num_segments = 3, 5
    graph = TrainGraph(build_cell_graph(num_layers, num_segments, rule=rule), truncation)
    for layer in range(num_layers):
        for segment in range(num_segments):
            got = set(graph.predecessors(TrainCell(B, layer, segment)))
            assert got == expected_backward_preds(layer, segment, num_layers, num_segments, rule, truncation)
            forward = set(graph.predecessors(TrainCell(F, layer, segment)))
            assert forward == {TrainCell(F, *cell) for cell in graph.forward.predecessors(Cell(layer, segment))}


def test_a_user_rule_gets_its_own_edges_reversed() -> None:
    edges = [((0, 0), (1, 2)), ((1, 0), (0, 1)), ((0, 1), (1, 2))]
    graph = TrainGraph(build_cell_graph(2, 3, rule=edges))
    assert set(graph.predecessors(TrainCell(B, 0, 1))) == {TrainCell(F, 0, 1), TrainCell(B, 1, 2)}
    assert set(graph.predecessors(TrainCell(B, 1, 0))) == {TrainCell(F, 1, 0), TrainCell(B, 0, 1)}
    assert graph.predecessors(TrainCell(B, 1, 2)) == (TrainCell(F, 1, 2),)


def test_a_recomputed_cell_waits_for_its_recompute_which_waits_for_its_forward() -> None:
    graph = TrainGraph(build_cell_graph(2, 2))
    assert graph.predecessors(TrainCell(R, 1, 1)) == (TrainCell(F, 1, 1),)
    assert graph.predecessors(TrainCell(B, 1, 1), recomputed=True) == (TrainCell(R, 1, 1),)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_truncation_is_refused_naming_the_value(bad: object) -> None:
    with pytest.raises(GraphError, match=f"BPTT truncation .* got {bad!r}"):
        TrainGraph(build_cell_graph(2, 2), bad)  # type: ignore[arg-type]


@FAST
@given(graph=cell_graphs(max_layers=4, max_segments=6), seed=st.integers(0, 2**32 - 1),
       truncation=st.one_of(st.none(), st.integers(1, 7)))
def test_every_random_topological_training_schedule_is_valid_and_round_trips(
    graph, seed: int, truncation: int | None
) -> None:
    train = TrainGraph(graph, truncation)
    schedule = random_train_schedule(train, random.Random(seed))
    validate_train(schedule, train)
    again = TrainSchedule.from_json(schedule.to_json())
    assert again == schedule
    validate_train(again, train)


def sample(seed: int = 0, rule: str = "layer_local") -> tuple[TrainGraph, TrainSchedule, random.Random]:
    rng = random.Random(seed)
    graph = TrainGraph(build_cell_graph(3, 4, rule=rule))
    return graph, random_train_schedule(graph, rng, recompute_share=0.5), rng


def rejected(schedule: TrainSchedule, graph: TrainGraph, kind: type[ScheduleError], named: TrainCell) -> None:
    with pytest.raises(kind) as info:
        validate_train(schedule, graph)
    message = str(info.value)
    assert "\n" not in message and str(named) in message
    grid = info.value.__notes__[0]
    block = grid.split(f"({named.phase.value}):\n", 1)[1]
    rows = block.split("\n")[: graph.num_layers + 1]
    assert parse_grid("\n".join(rows))[named.cell].marked


@pytest.mark.parametrize("seed", range(6))
def test_a_missing_backward_cell_is_named(seed: int) -> None:
    graph, schedule, rng = sample(seed)
    index, step = rng.choice(schedule.phase_steps(B))
    victim = rng.choice(step.cells)
    steps = [TrainStep(s.phase, tuple(c for c in s.cells if not (i == index and c == victim)))
             for i, s in enumerate(schedule.steps)]
    steps = [s for s in steps if s.cells]
    rejected(TrainSchedule(tuple(steps)), graph, MissingCellError, TrainCell(B, *victim))


@pytest.mark.parametrize("seed", range(6))
def test_a_backward_cell_moved_before_a_gradient_source_is_named(seed: int) -> None:
    graph, schedule, rng = sample(seed)
    backward = [node for step in schedule.steps if step.phase is B for node in step.nodes()
                if len(graph.predecessors(node, recomputed=node.cell in schedule.recomputed)) > 1]
    node = rng.choice(backward)
    steps = [TrainStep(s.phase, tuple(c for c in s.cells if not (s.phase is B and c == node.cell)))
             for s in schedule.steps]
    first_backward = next(i for i, s in enumerate(steps) if s.phase is B)
    steps.insert(first_backward, TrainStep(B, (node.cell,)))
    steps = [s for s in steps if s.cells]
    rejected(TrainSchedule(tuple(steps)), graph, DependencyError, node)


def test_a_recomputed_cell_backpropagated_before_its_recompute_is_named() -> None:
    graph = TrainGraph(build_cell_graph(1, 1))
    steps = (TrainStep(F, (Cell(0, 0),)), TrainStep(B, (Cell(0, 0),)), TrainStep(R, (Cell(0, 0),)))
    rejected(TrainSchedule(steps), graph, DependencyError, TrainCell(B, 0, 0))


def test_a_cell_run_twice_is_named() -> None:
    graph, schedule, _ = sample(1)
    first = schedule.steps[0]
    rejected(TrainSchedule((*schedule.steps, first)), graph, DuplicateCellError, next(first.nodes()))


def test_unknown_cells_and_empty_steps_are_refused() -> None:
    graph, schedule, _ = sample(2)
    with pytest.raises(UnknownCellError, match=r"training cell F\(7, 0\) in step 0 is not in the graph of 3 layers"):
        validate_train(TrainSchedule((TrainStep(F, (Cell(7, 0),)), *schedule.steps)), graph)
    with pytest.raises(ScheduleError, match="step 0 is empty"):
        validate_train(TrainSchedule((TrainStep(F, ()), *schedule.steps)), graph)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"kind": "forward", "steps": []}, "kind: expected 'train'"),
        ({"steps": 3}, "steps: expected a list, got 3"),
        ({"steps": [[[0, 0]]]}, r"steps\[0\]: expected an object with 'phase' and 'cells'"),
        ({"steps": [{"phase": "X", "cells": []}]}, r"steps\[0\].phase: expected one of \['F', 'R', 'B'\], got 'X'"),
        ({"steps": [{"phase": "F", "cells": [[0]]}]}, r"steps\[0\].cells: \[0\] is not a cell"),
        ({"steps": [], "options": 1}, "options: expected a JSON object, got 1"),
        ({}, "must be a JSON object with a 'steps' list"),
    ],
)
def test_malformed_training_json_names_the_field(data: dict, needle: str) -> None:
    with pytest.raises(ScheduleError, match=needle):
        TrainSchedule.from_json(json.dumps(data))


def test_held_activations_count_stored_and_rebuilt_cells_until_their_backward() -> None:
    steps = (
        TrainStep(F, (Cell(0, 0),)),
        TrainStep(F, (Cell(0, 1),)),
        TrainStep(R, (Cell(0, 0),)),
        TrainStep(B, (Cell(0, 1),)),
        TrainStep(B, (Cell(0, 0),)),
    )
    schedule = TrainSchedule(steps)
    assert schedule.recomputed == {Cell(0, 0)}
    assert schedule.held_activations() == [0, 1, 2, 2, 1]


def two_devices() -> tuple[TrainGraph, TrainSchedule]:
    graph = TrainGraph(build_cell_graph(2, 2))
    return graph, make_train_schedule(graph, "pipelined", num_devices=2)


def test_a_missing_transfer_across_devices_is_named() -> None:
    graph, schedule = two_devices()
    dropped = schedule.transfers[0]
    rest = tuple(t for t in schedule.transfers if t != dropped)
    with pytest.raises(MissingTransferError, match=rf"edge {dropped.node.phase.value}\({dropped.node.layer}, "):
        validate_train(TrainSchedule(schedule.steps, transfers=rest, num_devices=2), graph)


def test_a_backward_cell_away_from_its_activations_is_named() -> None:
    graph, schedule = two_devices()
    steps = [TrainStep(s.phase, s.cells, 1 - s.device if s.phase is B and Cell(0, 1) in s.cells else s.device)
             for s in schedule.steps]
    moved = TrainSchedule(tuple(steps), transfers=schedule.transfers, num_devices=2)
    with pytest.raises(InvalidScheduleError, match=r"training cell B\(0, 1\) runs on device 1 but F\(0, 1\) ran on"):
        validate_train(moved, graph)


def test_transfers_and_devices_outside_the_schedule_are_refused() -> None:
    graph, schedule = two_devices()
    wrong_source = TrainTransfer(TrainCell(F, 0, 0), 1, 0)
    with pytest.raises(InvalidScheduleError, match=r"transfer of F\(0, 0\) leaves device 1, but F\(0, 0\) runs on"):
        validate_train(TrainSchedule(schedule.steps, transfers=(wrong_source,), num_devices=2), graph)
    with pytest.raises(InvalidScheduleError, match=r"step 0 runs on device 1, outside 0\.\.0"):
        validate_train(TrainSchedule((TrainStep(F, (Cell(0, 0),), 1),)), graph)
