"""The schedule as a picture: the L x S grid of step numbers, with chosen cells marked.

``rmtsched schedule`` prints it to show the wavefront; the validator attaches it to its errors with the
offending cells marked (``grid_note``), so a person sees where in a hand-written schedule the rule
breaks. Large grids show a window that keeps the first marked cell in view.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from rmtsched.errors import ScheduleError
from rmtsched.sched.dag import Cell, CellGraph
from rmtsched.sched.schedule import Schedule

GRID_NOTE_LIMIT = 16  # an error's grid shows at most this many layers and segments around the first mark


def render_grid(
    schedule: Schedule,
    graph: CellGraph,
    max_segments: int = 48,
    *,
    max_layers: int | None = None,
    marked: Collection[Cell] = (),
) -> str:
    """The schedule as an L x S grid of step numbers (layer rows top to bottom), so the wavefront shows.

    Cells not in the schedule show '.'. ``marked`` cells show as ``[n]`` (``[.]`` if never run); to mark a
    step, mark its cells (``schedule.steps[k].cells``). At most ``max_segments`` columns and ``max_layers``
    rows (None: all) are shown: the first ones, or a window around the first marked cell of the graph.
    """
    step_of, device_of = _placement(schedule, graph, _shown_window(graph, max_segments, max_layers, marked))
    lines = grid_rows(graph, step_of, max_segments, max_layers=max_layers, marked=marked,
                      device_of=device_of if schedule.num_devices > 1 else None, widest=schedule.num_steps)
    lines.append(
        f"{schedule.scheduler}: {schedule.num_steps} steps, {schedule.num_cells} cells, "
        f"max width {schedule.max_width}, {schedule.num_devices} device(s)"
    )
    return "\n".join(lines)


def grid_rows(
    graph: CellGraph,
    step_of: Mapping[Cell, int],
    max_segments: int = 48,
    *,
    max_layers: int | None = None,
    marked: Collection[Cell] = (),
    device_of: Mapping[Cell, int] | None = None,
    widest: int = 0,
) -> list[str]:
    """The grid's lines (header, one row per layer, notes on what is cut) for the numbers in ``step_of``.

    ``render_grid`` and the training grid (one such block per phase) share it; ``device_of`` (if given)
    labels each row with its device, ``widest`` is the largest number the columns must fit.
    """
    layers, segments = _shown_window(graph, max_segments, max_layers, marked)
    marks = {Cell(*cell) for cell in marked if cell in graph}
    width = max(len(str(widest)), len(str(segments[-1])))

    def entry(text: str, cell: Cell | None = None) -> str:
        if not marks:
            return f"{text:>{width}}"
        return f"[{text:>{width}}]" if cell in marks else f" {text:>{width}} "

    gap = "" if marks else " "  # a marked grid pads every entry with a space or a bracket each side
    lines = [("layer\\seg " + gap.join(entry(str(s)) for s in segments)).rstrip()]
    for layer in reversed(layers):
        cells = [Cell(layer, s) for s in segments]
        row = gap.join(entry(str(step_of.get(cell, ".")), cell) for cell in cells)
        suffix = f"  (device {device_of.get(cells[0], 0)})" if device_of is not None else ""
        lines.append((f"{layer:>9} " + row).rstrip() + suffix)
    return lines + _cut_notes("segments", segments, graph.num_segments) + _cut_notes("layers", layers, graph.num_layers)


def _shown_window(
    graph: CellGraph, max_segments: int, max_layers: int | None, marked: Collection[Cell]
) -> tuple[range, range]:
    """The layers and segments a grid shows: the first ones, or a window around the first marked cell."""
    for name, limit in (("max_segments", max_segments), ("max_layers", max_layers)):
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ScheduleError(f"{name} must be a positive integer, got {limit!r}")
    focus = next((Cell(*cell) for cell in marked if cell in graph), None)
    segments = _window(graph.num_segments, max_segments, focus.segment if focus else None)
    layers = _window(graph.num_layers, max_layers or graph.num_layers, focus.layer if focus else None)
    return layers, segments


def grid_note(schedule: Schedule, graph: CellGraph, cells: Collection[Cell]) -> str:
    """The grid an error attaches (``exc.add_note``): ``cells`` marked, a window around them, how to read it."""
    grid = render_grid(schedule, graph, GRID_NOTE_LIMIT, max_layers=GRID_NOTE_LIMIT, marked=cells)
    return f"the schedule (each cell shows its step; [n] marks the cells named above):\n{grid}"


def _window(total: int, limit: int, focus: int | None) -> range:
    """``limit`` consecutive indices of ``range(total)``: the first ones, or centred on ``focus``."""
    if total <= limit or focus is None or focus < limit:
        return range(min(total, limit))
    start = min(focus - limit // 2, total - limit)
    return range(start, start + limit)


def _placement(
    schedule: Schedule, graph: CellGraph, window: tuple[range, range]
) -> tuple[dict[Cell, int], dict[Cell, int]]:
    """Step and device of every cell inside the window; cells outside the graph are skipped, not trusted."""
    layers, segments = window
    step_of: dict[Cell, int] = {}
    device_of: dict[Cell, int] = {}
    for index, step in enumerate(schedule.steps):
        for cell in step.cells:
            if cell in graph and cell[0] in layers and cell[1] in segments:
                step_of[cell] = index
                device_of[cell] = step.device
    return step_of, device_of


def _cut_notes(what: str, shown: range, total: int) -> list[str]:
    if len(shown) == total:
        return []
    if shown.start == 0:
        return [f"... {total - len(shown)} more {what} not shown"]
    return [f"... {what} {shown.start}..{shown.stop - 1} of {total} shown"]
