"""The validator: the one place that decides whether a schedule may run on a graph.

A schedule is valid when every cell of the graph runs exactly once, every edge u -> v has u in an
earlier step than v, and every edge that crosses devices has a transfer. Errors name the first
offending cell so a person can find it in a hand-written schedule.
"""

from __future__ import annotations

from rmtsched.errors import ScheduleError
from rmtsched.sched.dag import Cell, CellGraph
from rmtsched.sched.schedule import Schedule


class MissingCellError(ScheduleError):
    """A cell of the graph never runs."""


class DuplicateCellError(ScheduleError):
    """A cell runs in more than one step (or twice in one step)."""


class UnknownCellError(ScheduleError):
    """A step names a cell that is not in the graph."""


class DependencyError(ScheduleError):
    """A cell runs in the same step as, or before, one of its predecessors."""


class MissingTransferError(ScheduleError):
    """An edge crosses devices but no transfer carries the producer's output."""


def validate(schedule: Schedule, graph: CellGraph) -> None:
    """Raise a specific ``ScheduleError`` naming the first offending cell; return None when valid."""
    placement = _place_cells(schedule, graph)
    _check_complete(placement, graph)
    transfers = {(t.cell, t.src_device, t.dst_device) for t in schedule.transfers}
    for transfer in schedule.transfers:
        _check_transfer(transfer.cell, transfer.src_device, placement)
    for index, step in enumerate(schedule.steps):
        for cell in step.cells:
            for pred in graph.predecessors(cell):
                pred_index, pred_device = placement[pred]
                if pred_index >= index:
                    when = "in the same step as" if pred_index == index else f"before (step {pred_index})"
                    raise DependencyError(
                        f"cell {tuple(cell)} runs in step {index} {when} its predecessor {tuple(pred)}"
                    )
                if pred_device != step.device and (pred, pred_device, step.device) not in transfers:
                    raise MissingTransferError(
                        f"edge {tuple(pred)} -> {tuple(cell)} crosses from device {pred_device} to device "
                        f"{step.device} with no transfer of {tuple(pred)}'s output"
                    )


def _place_cells(schedule: Schedule, graph: CellGraph) -> dict[Cell, tuple[int, int]]:
    placement: dict[Cell, tuple[int, int]] = {}
    for index, step in enumerate(schedule.steps):
        if not step.cells:
            raise ScheduleError(f"step {index} is empty: every step must run at least one cell")
        if not 0 <= step.device < schedule.num_devices:
            raise ScheduleError(
                f"step {index} runs on device {step.device}, outside 0..{schedule.num_devices - 1}"
            )
        for cell in step.cells:
            if cell not in graph:
                raise UnknownCellError(
                    f"cell {tuple(cell)} in step {index} is not in the graph of "
                    f"{graph.num_layers} layers x {graph.num_segments} segments"
                )
            if cell in placement:
                raise DuplicateCellError(
                    f"cell {tuple(cell)} runs twice: in step {placement[cell][0]} and in step {index}"
                )
            placement[cell] = (index, step.device)
    return placement


def _check_complete(placement: dict[Cell, tuple[int, int]], graph: CellGraph) -> None:
    if len(placement) == graph.num_cells:
        return
    for cell in graph.cells():
        if cell not in placement:
            raise MissingCellError(f"cell {tuple(cell)} is never run by the schedule")


def _check_transfer(cell: Cell, src_device: int, placement: dict[Cell, tuple[int, int]]) -> None:
    if cell not in placement:
        raise UnknownCellError(f"transfer of cell {tuple(cell)} names a cell that is not in the graph")
    if placement[cell][1] != src_device:
        raise ScheduleError(
            f"transfer of cell {tuple(cell)} leaves device {src_device}, but the cell runs on device "
            f"{placement[cell][1]}"
        )
