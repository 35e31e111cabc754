"""render_grid shows the wavefront: the L x S grid of step numbers, top row the last layer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from sched_strategies import FAST

from rmtsched.sched import Cell, Schedule, Step, build_cell_graph, make_schedule, render_grid


def parse_grid(text: str, num_layers: int) -> dict[Cell, str]:
    """Read the grid back: row i (after the header) is layer L - 1 - i; each column is a segment."""
    rows = text.splitlines()[1 : 1 + num_layers]
    entries = {}
    for row in rows:
        layer, *values = row.split("(")[0].split()
        for segment, value in enumerate(values):
            entries[Cell(int(layer), segment)] = value
    return entries


@FAST
@given(st.integers(1, 12), st.integers(1, 40))
def test_diagonal_grid_entry_at_l_s_is_l_plus_s(num_layers: int, num_segments: int) -> None:
    graph = build_cell_graph(num_layers, num_segments)
    grid = parse_grid(render_grid(make_schedule(graph, "diagonal"), graph), num_layers)
    assert grid == {cell: str(cell.layer + cell.segment) for cell in graph.cells()}


@FAST
@given(st.integers(1, 12), st.integers(1, 40))
def test_sequential_grid_entry_at_l_s_is_s_times_l_plus_l(num_layers: int, num_segments: int) -> None:
    graph = build_cell_graph(num_layers, num_segments)
    grid = parse_grid(render_grid(make_schedule(graph, "sequential"), graph), num_layers)
    assert grid == {cell: str(cell.segment * num_layers + cell.layer) for cell in graph.cells()}


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
    grid = parse_grid(render_grid(partial, build_cell_graph(2, 2)), 2)
    assert grid == {Cell(0, 0): "0", Cell(0, 1): ".", Cell(1, 0): ".", Cell(1, 1): "."}


def test_multi_device_grids_label_each_layer_with_its_device() -> None:
    graph = build_cell_graph(4, 3)
    lines = render_grid(make_schedule(graph, "pipelined", num_devices=2), graph).splitlines()
    assert [line.endswith(f"(device {d})") for line, d in zip(lines[1:5], [1, 1, 0, 0], strict=True)] == [True] * 4
