"""render_grid shows the wavefront: the L x S grid of step numbers, top row the last layer, chosen cells marked."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from grid_text import Entry, parse_grid
from hypothesis import given
from hypothesis import strategies as st
from sched_strategies import FAST

from rmtsched.errors import ScheduleError
from rmtsched.sched import Cell, Schedule, Step, build_cell_graph, make_schedule, render_grid


def values(text: str) -> dict[Cell, str]:
    return {cell: entry.value for cell, entry in parse_grid(text).items()}


# The step of cell (l, s) in closed form: the anti-diagonal l + s, or segment-major order s * L + l.
STEP_OF: dict[str, Callable[[Cell, int], int]] = {
    "diagonal": lambda cell, num_layers: cell.layer + cell.segment,
    "sequential": lambda cell, num_layers: cell.segment * num_layers + cell.layer,
}


@pytest.mark.parametrize("scheduler", sorted(STEP_OF))
@FAST
@given(num_layers=st.integers(1, 12), num_segments=st.integers(1, 40))
def test_grid_entry_at_l_s_is_the_closed_form_step(scheduler: str, num_layers: int, num_segments: int) -> None:
    graph = build_cell_graph(num_layers, num_segments)
    grid = values(render_grid(make_schedule(graph, scheduler), graph))
    assert grid == {cell: str(STEP_OF[scheduler](cell, num_layers)) for cell in graph.cells()}


def test_grid_layout_header_footer_and_row_order() -> None:
    graph = build_cell_graph(3, 4)
    lines = render_grid(make_schedule(graph, "diagonal"), graph).splitlines()
    assert lines[0].split() == ["layer\\seg", "0", "1", "2", "3"]
    assert lines[1].split() == ["2", "2", "3", "4", "5"]
    assert lines[3].split() == ["0", "0", "1", "2", "3"]
    assert lines[-1] == "diagonal: 6 steps, 12 cells, max width 3, 1 device(s)"


def test_wide_grids_are_truncated_and_missing_cells_show_dots() -> None:
    graph = build_cell_graph(2, 60)
    text = render_grid(make_schedule(graph, "diagonal"), graph, max_segments=10)
    assert "... 50 more segments not shown" in text
    assert len(text.splitlines()[1].split()) == 11
    partial = Schedule((Step((Cell(0, 0),)),))
    grid = values(render_grid(partial, build_cell_graph(2, 2)))
    assert grid == {Cell(0, 0): "0", Cell(0, 1): ".", Cell(1, 0): ".", Cell(1, 1): "."}


def test_multi_device_grids_label_each_layer_with_its_device() -> None:
    graph = build_cell_graph(4, 3)
    lines = render_grid(make_schedule(graph, "pipelined", num_devices=2), graph).splitlines()
    assert [line.endswith(f"(device {d})") for line, d in zip(lines[1:5], [1, 1, 0, 0], strict=True)] == [True] * 4


@FAST
@given(st.integers(1, 12), st.integers(1, 40), st.data())
def test_marked_cells_show_in_brackets_and_every_step_number_is_unchanged(
    num_layers: int, num_segments: int, data: st.DataObject
) -> None:
    graph = build_cell_graph(num_layers, num_segments)
    marked = data.draw(st.sets(st.sampled_from(list(graph.cells())), min_size=1, max_size=5))
    grid = parse_grid(render_grid(make_schedule(graph, "diagonal"), graph, marked=marked))
    assert grid == {cell: Entry(str(cell.layer + cell.segment), cell in marked) for cell in graph.cells()}


def test_marking_a_step_marks_its_cells_and_a_never_run_cell_shows_a_marked_dot() -> None:
    graph = build_cell_graph(4, 8)
    schedule = make_schedule(graph, "diagonal", max_width=2)
    grid = parse_grid(render_grid(schedule, graph, marked=schedule.steps[5].cells))
    assert {cell for cell, entry in grid.items() if entry.marked} == set(schedule.steps[5].cells)
    assert {entry.value for entry in grid.values() if entry.marked} == {"5"}
    partial = Schedule((Step((Cell(0, 0),)),))
    assert parse_grid(render_grid(partial, build_cell_graph(1, 2), marked=[Cell(0, 1)]))[Cell(0, 1)] == Entry(".", True)


@pytest.mark.parametrize("cell", [Cell(30, 90), Cell(39, 99), Cell(5, 70), Cell(35, 3)])
def test_a_large_grid_shows_a_window_around_the_first_marked_cell(cell: Cell) -> None:
    graph = build_cell_graph(40, 100)
    text = render_grid(make_schedule(graph, "diagonal"), graph, 16, max_layers=16, marked=[cell, Cell(0, 0)])
    grid = parse_grid(text)
    assert len(grid) == 16 * 16
    assert grid[cell] == Entry(str(cell.layer + cell.segment), True)
    assert all(entry.value == str(c.layer + c.segment) for c, entry in grid.items())
    shown_segments = sorted({c.segment for c in grid})
    assert shown_segments == list(range(shown_segments[0], shown_segments[0] + 16))
    assert ("segments" in text) and ("layers" in text)  # the cut is said, in both directions


def test_marks_outside_the_graph_are_ignored_and_bad_limits_are_refused() -> None:
    graph = build_cell_graph(2, 3)
    schedule = make_schedule(graph, "diagonal")
    text = render_grid(schedule, graph, marked=[Cell(7, 7), (-1, 0)])
    assert not any(entry.marked for entry in parse_grid(text).values())
    with pytest.raises(ScheduleError, match="max_segments must be a positive integer, got 0"):
        render_grid(schedule, graph, 0)
    with pytest.raises(ScheduleError, match="max_layers must be a positive integer, got -2"):
        render_grid(schedule, graph, max_layers=-2)
