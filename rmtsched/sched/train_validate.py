"""The training validator: the one place that decides whether a training schedule may run on a graph.

Valid when every cell's F and B run exactly once, an R (recompute) runs at most once per cell, no step
is empty, every node runs in a later step than each of its ``TrainGraph.predecessors`` (B(c) after
R(c) where c is recomputed), a cell's F, R and B share a device, and every edge between devices has a
transfer of the producer's output. Errors name the first offending node in step order, one line, with the
phase grids attached as a note (the offending cells marked), as the forward validator does.
"""

from __future__ import annotations

from rmtsched.sched._gc import gc_paused
from rmtsched.sched.train_dag import TrainCell, TrainGraph
from rmtsched.sched.train_render import train_grid_note
from rmtsched.sched.train_schedule import TrainSchedule
from rmtsched.sched.validate import (
    DependencyError,
    DuplicateCellError,
    InvalidScheduleError,
    MissingCellError,
    MissingTransferError,
    UnknownCellError,
)


def validate_train(schedule: TrainSchedule, graph: TrainGraph) -> None:
    """Raise a specific ``ScheduleError`` naming the first offending training cell; None when valid."""
    with gc_paused():
        try:
            _check(schedule, graph)
        except InvalidScheduleError as error:
            error.add_note(train_grid_note(schedule, graph, error.cells))
            raise


def _check(schedule: TrainSchedule, graph: TrainGraph) -> None:
    step_of, device_of = _place(schedule, graph)
    for node in graph.cells():
        if node not in step_of:
            raise MissingCellError(f"training cell {node} is never run by the schedule", node)
    _check_transfers(schedule, step_of, device_of)
    transfers = {(t.node, t.src_device, t.dst_device) for t in schedule.transfers}
    recomputed = schedule.recomputed
    for index, step in enumerate(schedule.steps):
        for node in step.nodes():
            for pred in graph.predecessors(node, recomputed=node.cell in recomputed):
                pred_index = step_of[pred]
                if pred_index >= index:
                    when = "in the same step as" if pred_index == index else f"before (step {pred_index})"
                    raise DependencyError(f"training cell {node} runs in step {index} {when} {pred}", node, pred)
                if pred.cell == node.cell and device_of[pred] != step.device:
                    raise InvalidScheduleError(
                        f"training cell {node} runs on device {step.device} but {pred} ran on device "
                        f"{device_of[pred]}: a cell's F, R and B share the device holding its activations",
                        node, pred,
                    )
                if device_of[pred] != step.device and (pred, device_of[pred], step.device) not in transfers:
                    raise MissingTransferError(
                        f"edge {pred} -> {node} crosses from device {device_of[pred]} to device {step.device} "
                        f"with no transfer of {pred}'s output",
                        pred, node,
                    )


def _check_transfers(
    schedule: TrainSchedule, step_of: dict[TrainCell, int], device_of: dict[TrainCell, int]
) -> None:
    for transfer in schedule.transfers:
        node = transfer.node
        if node not in step_of:
            raise UnknownCellError(f"transfer of training cell {node} names a cell the schedule does not run")
        if device_of[node] != transfer.src_device:
            raise InvalidScheduleError(
                f"transfer of {node} leaves device {transfer.src_device}, but {node} runs on device "
                f"{device_of[node]}", node,
            )
        if not 0 <= transfer.dst_device < schedule.num_devices:
            raise InvalidScheduleError(
                f"transfer of {node} goes to device {transfer.dst_device}, outside 0..{schedule.num_devices - 1}",
                node,
            )


def _place(schedule: TrainSchedule, graph: TrainGraph) -> tuple[dict[TrainCell, int], dict[TrainCell, int]]:
    step_of: dict[TrainCell, int] = {}
    device_of: dict[TrainCell, int] = {}
    for index, step in enumerate(schedule.steps):
        if not step.cells:
            raise InvalidScheduleError(f"step {index} is empty: every step must run at least one cell")
        if not 0 <= step.device < schedule.num_devices:
            raise InvalidScheduleError(
                f"step {index} runs on device {step.device}, outside 0..{schedule.num_devices - 1}", *step.nodes()
            )
        for node in step.nodes():
            if node not in graph:
                raise UnknownCellError(
                    f"training cell {node.phase.value}{tuple(node.cell)} in step {index} is not in the graph of "
                    f"{graph.num_layers} layers x {graph.num_segments} segments",
                    *step.nodes(),
                )
            if node in step_of:
                raise DuplicateCellError(
                    f"training cell {node} runs twice: in step {step_of[node]} and in step {index}", node
                )
            step_of[node] = index
            device_of[node] = step.device
    return step_of, device_of


__all__ = ["validate_train"]
