"""The validator accepts every random topological schedule and rejects each kind of mutation precisely.

Every rejection is checked twice: ``validate`` (vectorised acceptance, then the per-cell pass) and
``validate_per_cell`` (the reference) must raise the same class with the same one-line message, and its
note must draw the schedule's grid with the named cell marked.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from grid_text import parse_grid
from hypothesis import assume, given
from hypothesis import strategies as st
from sched_strategies import FAST, THOROUGH, Placed, step_of, valid_schedules, with_steps

from rmtsched.errors import ScheduleError
from rmtsched.sched import Cell, CellGraph, Schedule, Step, Transfer, build_cell_graph, make_schedule, validate
from rmtsched.sched.validate import (
    DependencyError,
    DuplicateCellError,
    MissingCellError,
    MissingTransferError,
    UnknownCellError,
    validate_per_cell,
)


def rejection(schedule: Schedule, graph: CellGraph) -> ScheduleError | None:
    """The error ``validate`` raises (None if valid), after checking the reference pass agrees exactly."""
    errors = []
    for check in (validate, validate_per_cell):
        try:
            check(schedule, graph)
            errors.append(None)
        except ScheduleError as exc:
            errors.append(exc)
    fast, reference = errors
    assert type(fast) is type(reference)
    assert str(fast) == str(reference)
    if fast is not None:
        assert "\n" not in str(fast), "the message is the one line the CLI prints; the grid goes in a note"
        assert fast.__notes__ == reference.__notes__ and len(fast.__notes__) == 1
    return fast


def assert_rejected(schedule: Schedule, graph: CellGraph, kind: type[ScheduleError], cell: tuple) -> None:
    error = rejection(schedule, graph)
    assert type(error) is kind, f"expected {kind.__name__}, got {error!r}"
    assert str(tuple(cell)) in str(error)
    if cell in graph:
        assert parse_grid(error.__notes__[0].split("\n", 1)[1])[Cell(*cell)].marked


def with_cell_added(placed: Placed, cell: Cell) -> Schedule:
    """The schedule with ``cell`` appended to a random step."""
    steps = list(placed.schedule.steps)
    index = placed.rng.randrange(len(steps))
    steps[index] = Step((*steps[index].cells, cell), steps[index].device)
    return with_steps(placed.schedule, steps)


@THOROUGH
@given(valid_schedules())
def test_validator_accepts_every_random_topological_schedule(placed: Placed) -> None:
    assert rejection(placed.schedule, placed.graph) is None


@FAST
@given(valid_schedules(max_devices=1))
def test_swapping_two_dependent_cells_is_a_dependency_error(placed: Placed) -> None:
    schedule, graph, rng = placed.schedule, placed.graph, placed.rng
    edges = list(graph.edges())
    assume(edges)
    source, target = rng.choice(edges)
    steps = list(schedule.steps)
    where = step_of(schedule)
    swap = {source: target, target: source}
    for index in (where[source], where[target]):
        steps[index] = Step(tuple(swap.get(cell, cell) for cell in steps[index].cells), steps[index].device)
    assert_rejected(with_steps(schedule, steps), graph, DependencyError, target)


@FAST
@given(valid_schedules())
def test_dropping_a_cell_is_a_missing_cell_error(placed: Placed) -> None:
    schedule, graph, rng = placed.schedule, placed.graph, placed.rng
    dropped = rng.choice(list(schedule.cells()))
    steps = [Step(tuple(c for c in step.cells if c != dropped), step.device) for step in schedule.steps]
    assert_rejected(with_steps(schedule, [step for step in steps if step.cells]), graph, MissingCellError, dropped)


@FAST
@given(valid_schedules())
def test_duplicating_a_cell_is_a_duplicate_cell_error(placed: Placed) -> None:
    schedule, graph, rng = placed.schedule, placed.graph, placed.rng
    copied = rng.choice(list(schedule.cells()))
    assert_rejected(with_cell_added(placed, copied), graph, DuplicateCellError, copied)


@FAST
@given(valid_schedules(max_devices=3))
def test_dropping_a_needed_transfer_is_a_missing_transfer_error(placed: Placed) -> None:
    schedule, graph, rng = placed.schedule, placed.graph, placed.rng
    assume(schedule.transfers)
    dropped = rng.choice(schedule.transfers)
    transfers = tuple(t for t in schedule.transfers if t != dropped)
    assert_rejected(with_steps(schedule, list(schedule.steps), transfers), graph, MissingTransferError, dropped.cell)


@FAST
@given(valid_schedules(), st.sampled_from(["layer", "segment", "negative"]))
def test_a_cell_outside_the_grid_is_an_unknown_cell_error(placed: Placed, where: str) -> None:
    graph, rng = placed.graph, placed.rng
    outside = {
        "layer": Cell(graph.num_layers, 0),
        "segment": Cell(0, graph.num_segments),
        "negative": Cell(-1, rng.randrange(graph.num_segments)),
    }[where]
    assert_rejected(with_cell_added(placed, outside), graph, UnknownCellError, outside)


@FAST
@given(valid_schedules(max_devices=2), st.data())
def test_fast_and_reference_passes_agree_on_arbitrary_corruptions(placed: Placed, data: st.DataObject) -> None:
    """Random edits (move a cell to another step, change a device, retarget a transfer) never split them."""
    schedule, graph, rng = placed.schedule, placed.graph, placed.rng
    steps = [list(step.cells) for step in schedule.steps]
    devices = [step.device for step in schedule.steps]
    transfers = list(schedule.transfers)
    for _ in range(data.draw(st.integers(1, 3))):
        edit = data.draw(st.sampled_from(["move", "device", "transfer", "merge"]))
        if edit == "move":
            source = rng.randrange(len(steps))
            if steps[source]:
                steps[rng.randrange(len(steps))].append(steps[source].pop())
        elif edit == "device":
            devices[rng.randrange(len(devices))] = rng.randrange(schedule.num_devices + 1)
        elif edit == "transfer" and transfers:
            t = transfers.pop(rng.randrange(len(transfers)))
            transfers.append(Transfer(t.cell, t.src_device, rng.randrange(schedule.num_devices + 1)))
        elif edit == "merge" and len(steps) > 1:
            index = rng.randrange(len(steps) - 1)
            steps[index] += steps.pop(index + 1)
            devices.pop(index + 1)
    corrupted = Schedule(
        tuple(Step(tuple(cells), device) for cells, device in zip(steps, devices, strict=True)),
        tuple(transfers),
        num_devices=schedule.num_devices,
    )
    rejection(corrupted, graph)


@pytest.mark.parametrize(
    "odd_cell",
    [
        (np.int64(0), 0),  # numpy integers are not plain ints: the reference pass calls it unknown
        [0, 0],  # a list is not a cell
        (0.0, 0),  # nor is a float coordinate
        (0, 0, 0),
    ],
)
def test_cells_of_the_wrong_type_get_the_same_verdict_from_both_passes(odd_cell: object) -> None:
    graph = build_cell_graph(2, 2)
    schedule = make_schedule(graph, "sequential")
    steps = [Step((odd_cell,))] + [step for step in schedule.steps if step.cells != (Cell(0, 0),)]
    error = rejection(Schedule(tuple(steps)), graph)
    assert isinstance(error, UnknownCellError)


def test_same_step_dependency_and_early_dependency_messages() -> None:
    graph = build_cell_graph(2, 1)
    same = Schedule((Step((Cell(0, 0), Cell(1, 0))),))
    same_step = r"cell \(1, 0\) runs in step 0 in the same step as its predecessor \(0, 0\)"
    with pytest.raises(DependencyError, match=same_step):
        validate(same, graph)
    early = Schedule((Step((Cell(1, 0),)), Step((Cell(0, 0),))))
    with pytest.raises(DependencyError, match=r"cell \(1, 0\) runs in step 0 before \(step 1\) its predecessor"):
        validate(early, graph)


def test_global_memory_edge_is_enforced() -> None:
    """On a global-memory grid the diagonal of a layer-local grid is invalid: (L-1, 0) must precede (0, 1)."""
    layer_local = build_cell_graph(3, 3)
    global_memory = build_cell_graph(3, 3, rule="global_memory")
    diagonal = make_schedule(layer_local, "diagonal")
    validate(diagonal, layer_local)
    error = rejection(diagonal, global_memory)
    assert isinstance(error, DependencyError)
    assert "(0, 1)" in str(error) and "(2, 0)" in str(error)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (Schedule((Step(()), Step((Cell(0, 0),)))), "step 0 is empty"),
        (Schedule((Step((Cell(0, 0),), 1),)), "step 0 runs on device 1, outside 0..0"),
        (Schedule((Step((Cell(0, 0),), -1),), num_devices=2), "runs on device -1, outside 0..1"),
        (
            Schedule((Step((Cell(0, 0),), 0),), (Transfer(Cell(0, 0), 1, 0),), num_devices=2),
            r"transfer of cell \(0, 0\) leaves device 1, but the cell runs on device 0",
        ),
        (
            Schedule((Step((Cell(0, 0),), 0),), (Transfer(Cell(0, 0), 0, 2),), num_devices=2),
            r"transfer of cell \(0, 0\) goes to device 2, outside 0..1",
        ),
        (Schedule(()), r"cell \(0, 0\) is never run"),
    ],
)
def test_structural_errors_name_the_step_or_cell(schedule: Schedule, message: str) -> None:
    graph = build_cell_graph(1, 1)
    with pytest.raises(ScheduleError, match=message):
        validate(schedule, graph)
    with pytest.raises(ScheduleError, match=message):
        validate_per_cell(schedule, graph)


def test_transfer_of_a_cell_outside_the_grid_is_unknown() -> None:
    graph = build_cell_graph(1, 1)
    schedule = Schedule((Step((Cell(0, 0),)),), (Transfer(Cell(5, 5), 0, 0),))
    with pytest.raises(UnknownCellError, match=r"transfer of cell \(5, 5\)"):
        validate(schedule, graph)


def test_errors_are_schedule_errors_and_value_errors() -> None:
    for kind in (MissingCellError, DuplicateCellError, DependencyError, MissingTransferError, UnknownCellError):
        assert issubclass(kind, ScheduleError) and issubclass(kind, ValueError)


def test_pipelined_schedule_without_its_transfers_is_rejected() -> None:
    graph = build_cell_graph(4, 3)
    schedule = make_schedule(graph, "pipelined", num_devices=2)
    assert schedule.transfers
    stripped = Schedule(schedule.steps, (), schedule.scheduler, schedule.num_devices)
    assert_rejected(stripped, graph, MissingTransferError, (1, 0))


def test_random_schedule_generator_uses_several_devices_and_wide_steps() -> None:
    """Guard for the strategy itself: it must produce the cases the mutations need."""
    from random_dags import random_valid_schedule

    graph = build_cell_graph(6, 8)
    schedules = [random_valid_schedule(graph, random.Random(seed), 3, shuffle_transfers=True) for seed in range(20)]
    assert any(schedule.transfers for schedule in schedules)
    assert any(schedule.max_width > 1 for schedule in schedules)
    for schedule in schedules:
        validate(schedule, graph)


def test_a_dependency_error_marks_the_cell_and_its_predecessor_in_the_grid_of_steps() -> None:
    graph = build_cell_graph(4, 8)
    steps = list(make_schedule(graph, "diagonal").steps)
    steps[3], steps[4] = steps[4], steps[3]
    with pytest.raises(DependencyError) as caught:
        validate(Schedule(tuple(steps)), graph)
    assert str(caught.value) == "cell (0, 4) runs in step 3 before (step 4) its predecessor (0, 3)"
    heading, grid_text = caught.value.__notes__[0].split("\n", 1)
    assert "[n] marks the cells named above" in heading
    grid = parse_grid(grid_text)
    assert {cell for cell, entry in grid.items() if entry.marked} == {Cell(0, 4), Cell(0, 3)}
    assert (grid[Cell(0, 4)].value, grid[Cell(0, 3)].value, grid[Cell(3, 0)].value) == ("3", "4", "4")


def test_an_error_deep_in_a_large_schedule_shows_a_window_around_it() -> None:
    graph = build_cell_graph(40, 100)
    schedule = make_schedule(graph, "pipelined", num_devices=2)
    error = rejection(Schedule(schedule.steps, schedule.transfers[:-1], "pipelined", 2), graph)
    assert isinstance(error, MissingTransferError)
    grid = parse_grid(error.__notes__[0].split("\n", 1)[1])
    assert {cell for cell, entry in grid.items() if entry.marked} == {Cell(19, 99), Cell(20, 99)}
    assert len(grid) <= 16 * 16


def test_a_bad_step_marks_every_cell_of_that_step() -> None:
    graph = build_cell_graph(3, 3)
    schedule = make_schedule(graph, "diagonal")
    steps = list(schedule.steps)
    steps[2] = Step(steps[2].cells, 5)
    error = rejection(Schedule(tuple(steps)), graph)
    assert str(error) == "step 2 runs on device 5, outside 0..0"
    grid = parse_grid(error.__notes__[0].split("\n", 1)[1])
    assert {cell for cell, entry in grid.items() if entry.marked} == set(steps[2].cells)
