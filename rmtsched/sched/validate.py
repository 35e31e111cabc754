"""The validator: the one place that decides whether a schedule may run on a graph.

A schedule is valid when every cell of the graph runs exactly once, every edge u -> v has u in an
earlier step than v, and every edge that crosses devices has a transfer. Errors name the first
offending cell so a person can find it in a hand-written schedule: the message is one line (what the
CLI prints), and a note attached to the exception (``add_note``, shown under the message in a traceback
and in ``exc.__notes__``) draws the schedule's grid with the cells the message names marked ``[n]``.

Two passes share that definition. A vectorised pass over flat cell indices and ``CellGraph.edge_index``
accepts a valid schedule without one Python object per edge (1M cells in well under a second); it can
only say "valid" or "not sure". Anything it does not accept goes through the per-cell pass, which is
the reference: it finds the first offending cell in step order and raises the specific error.
"""

from __future__ import annotations

from itertools import chain

import numpy as np

from rmtsched.errors import ScheduleError
from rmtsched.sched._gc import gc_paused
from rmtsched.sched.dag import Cell, CellGraph
from rmtsched.sched.render import grid_note
from rmtsched.sched.schedule import Schedule


class InvalidScheduleError(ScheduleError):
    """The schedule breaks the validity rule; ``cells`` are the cells the message names."""

    def __init__(self, message: str, *cells: Cell) -> None:
        super().__init__(message)
        self.cells = cells


class MissingCellError(InvalidScheduleError):
    """A cell of the graph never runs."""


class DuplicateCellError(InvalidScheduleError):
    """A cell runs in more than one step (or twice in one step)."""


class UnknownCellError(InvalidScheduleError):
    """A step names a cell that is not in the graph."""


class DependencyError(InvalidScheduleError):
    """A cell runs in the same step as, or before, one of its predecessors."""


class MissingTransferError(InvalidScheduleError):
    """An edge crosses devices but no transfer carries the producer's output."""


def validate(schedule: Schedule, graph: CellGraph) -> None:
    """Raise a specific ``ScheduleError`` naming the first offending cell; return None when valid."""
    if not _accepts_vectorised(schedule, graph):
        validate_per_cell(schedule, graph)


# -- the reference pass ---------------------------------------------------------------------------
def validate_per_cell(schedule: Schedule, graph: CellGraph) -> None:
    """The definition of validity, cell by cell in step order; ``validate`` agrees with it exactly."""
    with gc_paused():
        try:
            _check_in_step_order(schedule, graph)
        except InvalidScheduleError as error:
            error.add_note(grid_note(schedule, graph, error.cells))
            raise


def _check_in_step_order(schedule: Schedule, graph: CellGraph) -> None:
    placement = _place_cells(schedule, graph)
    _check_complete(placement, graph)
    for transfer in schedule.transfers:
        _check_transfer(transfer.cell, transfer.src_device, transfer.dst_device, placement, schedule.num_devices)
    transfers = {(t.cell, t.src_device, t.dst_device) for t in schedule.transfers}
    for index, step in enumerate(schedule.steps):
        for cell in step.cells:
            _check_predecessors(cell, index, step.device, graph, placement, transfers)


def _check_predecessors(
    cell: Cell,
    index: int,
    device: int,
    graph: CellGraph,
    placement: dict[Cell, tuple[int, int]],
    transfers: set[tuple[Cell, int, int]],
) -> None:
    for pred in graph.predecessors(cell):
        pred_index, pred_device = placement[pred]
        if pred_index >= index:
            when = "in the same step as" if pred_index == index else f"before (step {pred_index})"
            raise DependencyError(
                f"cell {tuple(cell)} runs in step {index} {when} its predecessor {tuple(pred)}", cell, pred
            )
        if pred_device != device and (pred, pred_device, device) not in transfers:
            raise MissingTransferError(
                f"edge {tuple(pred)} -> {tuple(cell)} crosses from device {pred_device} to device "
                f"{device} with no transfer of {tuple(pred)}'s output",
                pred,
                cell,
            )


def _place_cells(schedule: Schedule, graph: CellGraph) -> dict[Cell, tuple[int, int]]:
    placement: dict[Cell, tuple[int, int]] = {}
    for index, step in enumerate(schedule.steps):
        if not step.cells:
            raise InvalidScheduleError(f"step {index} is empty: every step must run at least one cell")
        if not 0 <= step.device < schedule.num_devices:
            raise InvalidScheduleError(
                f"step {index} runs on device {step.device}, outside 0..{schedule.num_devices - 1}", *step.cells
            )
        for cell in step.cells:
            if cell not in graph:
                raise UnknownCellError(
                    f"cell {_show(cell)} in step {index} is not in the graph of "
                    f"{graph.num_layers} layers x {graph.num_segments} segments",
                    *step.cells,
                )
            if cell in placement:
                raise DuplicateCellError(
                    f"cell {tuple(cell)} runs twice: in step {placement[cell][0]} and in step {index}", cell
                )
            placement[cell] = (index, step.device)
    return placement


def _check_complete(placement: dict[Cell, tuple[int, int]], graph: CellGraph) -> None:
    if len(placement) == graph.num_cells:
        return
    for cell in graph.cells():
        if cell not in placement:
            raise MissingCellError(f"cell {tuple(cell)} is never run by the schedule", cell)


def _check_transfer(
    cell: Cell, src_device: int, dst_device: int, placement: dict[Cell, tuple[int, int]], num_devices: int
) -> None:
    if cell not in placement:
        raise UnknownCellError(f"transfer of cell {_show(cell)} names a cell that is not in the graph")
    if placement[cell][1] != src_device:
        raise InvalidScheduleError(
            f"transfer of cell {tuple(cell)} leaves device {src_device}, but the cell runs on device "
            f"{placement[cell][1]}",
            cell,
        )
    if not 0 <= dst_device < num_devices:
        raise InvalidScheduleError(
            f"transfer of cell {tuple(cell)} goes to device {dst_device}, outside 0..{num_devices - 1}", cell
        )


def _show(cell: object) -> str:
    return str(tuple(cell)) if isinstance(cell, tuple) else repr(cell)


# -- the vectorised acceptance pass ---------------------------------------------------------------
def _accepts_vectorised(schedule: Schedule, graph: CellGraph) -> bool:
    """True only if the schedule is valid; False means "let the per-cell pass decide and explain"."""
    steps = schedule.steps
    num_cells, num_devices = graph.num_cells, schedule.num_devices
    if not steps or type(num_devices) is not int or num_devices**2 * num_cells >= 2**62:
        return False
    widths = np.fromiter(map(len, (step.cells for step in steps)), np.int64, len(steps))
    if widths.min() == 0 or widths.sum() != num_cells:
        return False
    step_devices = _exact_ints([step.device for step in steps])
    if step_devices is None or step_devices.min() < 0 or step_devices.max() >= num_devices:
        return False
    index = _flat_indices(list(chain.from_iterable(step.cells for step in steps)), graph)
    if index is None or np.bincount(index, minlength=num_cells).max() != 1:
        return False
    # Every cell present exactly once: scatter each cell's step and device into flat-index order.
    step_of = np.empty(num_cells, np.int64)
    step_of[index] = np.repeat(np.arange(len(steps), dtype=np.int64), widths)
    device_of = np.empty(num_cells, np.int64)
    device_of[index] = np.repeat(step_devices, widths)
    sources, targets = graph.edge_index()
    if np.any(step_of[sources] >= step_of[targets]):
        return False
    return _transfers_cover(schedule, graph, sources, targets, device_of)


def _transfers_cover(
    schedule: Schedule, graph: CellGraph, sources: np.ndarray, targets: np.ndarray, device_of: np.ndarray
) -> bool:
    """Every transfer is well-formed, and every cross-device edge has its (cell, src, dst) transfer."""
    num_devices = schedule.num_devices
    crossing = device_of[sources] != device_of[targets]
    if not schedule.transfers:
        return not crossing.any()
    cells = _flat_indices([t.cell for t in schedule.transfers], graph)
    src = _exact_ints([t.src_device for t in schedule.transfers])
    dst = _exact_ints([t.dst_device for t in schedule.transfers])
    if cells is None or src is None or dst is None or np.any(device_of[cells] != src):
        return False
    if dst.min() < 0 or dst.max() >= num_devices:
        return False
    have = (cells * num_devices + src) * num_devices + dst
    edge_sources = sources[crossing]
    need = (edge_sources * num_devices + device_of[edge_sources]) * num_devices + device_of[targets[crossing]]
    return bool(np.isin(need, have).all())


def _flat_indices(cells: list, graph: CellGraph) -> np.ndarray | None:
    """Flat indices of cells that are all (layer, segment) tuples of exact ints inside the grid, else None."""
    if not all(issubclass(kind, tuple) for kind in set(map(type, cells))) or set(map(len, cells)) - {2}:
        return None
    coords = _exact_ints(list(chain.from_iterable(cells)))
    if coords is None:
        return None
    layers, segments = coords[0::2], coords[1::2]
    if layers.min() < 0 or layers.max() >= graph.num_layers or segments.min() < 0:
        return None
    if segments.max() >= graph.num_segments:
        return None
    return segments * graph.num_layers + layers


def _exact_ints(values: list) -> np.ndarray | None:
    """``values`` as int64 when every one is a plain int (not bool, not a numpy scalar) that fits."""
    if not values or set(map(type, values)) != {int}:
        return None
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError:
        return None
