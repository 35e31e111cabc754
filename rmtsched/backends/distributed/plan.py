"""What one rank does in a multi-device schedule: its layers, its steps, what it sends and receives.

A ``RankPlan`` is pure data derived from the schedule, the cell graph and the protocol's data flow (the
hidden input of (l, s) is the output of (l-1, s); layer 0 of a global-memory model also reads the output of
(L-1, s-1)). The launcher builds every rank's plan before starting a process, so a bad configuration fails
fast, and each rank rebuilds its own identically.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

from rmtsched.errors import ScheduleError
from rmtsched.sched import Cell, CellGraph, Schedule, validate


@dataclass(frozen=True)
class RankPlan:
    """One rank's share of a schedule.

    ``steps`` holds (global step index, the step's cells sorted by layer) in schedule order; ``sends`` maps
    a cell to the ranks that need its output; ``recvs`` maps a source rank to the cells it sends here, in
    the order it sends them (the order of their steps in the schedule), which both ends compute
    identically, so no message needs to name its cell.
    """

    rank: int
    world_size: int
    num_layers: int
    segment_tokens: tuple[int, ...]
    layers: range
    steps: tuple[tuple[int, tuple[Cell, ...]], ...]
    sends: Mapping[Cell, tuple[int, ...]]
    recvs: Mapping[int, tuple[Cell, ...]]
    uses_previous_output: bool

    @property
    def num_segments(self) -> int:
        return len(self.segment_tokens)

    @property
    def runs_first_layer(self) -> bool:
        return 0 in self.layers

    @property
    def runs_last_layer(self) -> bool:
        return self.num_layers - 1 in self.layers

    def data_source(self, cell: Cell) -> Cell | None:
        return data_source(cell, self.num_layers, self.uses_previous_output)


def data_source(cell: Cell, num_layers: int, uses_previous_output: bool) -> Cell | None:
    """The cell whose output ``cell`` reads as hidden input (None: layer 0 without a global memory)."""
    if cell.layer > 0:
        return Cell(cell.layer - 1, cell.segment)
    if uses_previous_output and cell.segment > 0:
        return Cell(num_layers - 1, cell.segment - 1)
    return None


def layer_owners(schedule: Schedule, graph: CellGraph) -> list[int]:
    """The device of every layer; a layer whose cells run on two devices is refused.

    A layer's recurrent state lives on one rank only (moving it every segment would cost more than the
    hidden states the pipeline sends), so every cell of a layer must run on the same device.
    """
    owner: dict[int, int] = {}
    for index, step in enumerate(schedule.steps):
        for cell in step.cells:
            previous = owner.setdefault(cell.layer, step.device)
            if previous != step.device:
                raise ScheduleError(
                    f"layer {cell.layer} runs on device {previous} and on device {step.device} (step {index}): "
                    "the distributed executor keeps each layer's weights and state on one rank"
                )
    return [owner[layer] for layer in range(graph.num_layers)]


def build_plans(schedule: Schedule, graph: CellGraph, world_size: int, uses_previous_output: bool) -> list[RankPlan]:
    """Validate ``schedule`` for a ``world_size``-process run and split it into one plan per rank."""
    if graph.num_layers < world_size:
        raise ScheduleError(
            f"cannot run {graph.num_layers} layer(s) on {world_size} processes: every rank needs at least one layer"
        )
    if schedule.num_devices != world_size:
        raise ScheduleError(
            f"the schedule is for {schedule.num_devices} device(s) but the run has {world_size} process(es)"
        )
    validate(schedule, graph)
    owners = layer_owners(schedule, graph)
    position = _step_positions(schedule)
    transfers = {(t.cell, t.src_device, t.dst_device) for t in schedule.transfers}
    sends: list[dict[Cell, list[int]]] = [{} for _ in range(world_size)]
    channel: dict[tuple[int, int], list[Cell]] = {}
    for cell in graph.cells():
        source = data_source(cell, graph.num_layers, uses_previous_output)
        if source is None:
            continue
        src, dst = owners[source.layer], owners[cell.layer]
        if src == dst:
            continue
        if (source, src, dst) not in transfers:
            raise ScheduleError(
                f"cell {tuple(cell)} on device {dst} reads the output of {tuple(source)} on device {src}, "
                "but the schedule has no transfer for it"
            )
        sends[src].setdefault(source, []).append(dst)
        channel.setdefault((src, dst), []).append(source)
    return [
        RankPlan(
            rank=rank,
            world_size=world_size,
            num_layers=graph.num_layers,
            segment_tokens=graph.segment_tokens,
            layers=_owned_range(owners, rank),
            steps=tuple(
                (index, sorted_step(step.cells, index))
                for index, step in enumerate(schedule.steps)
                if step.device == rank
            ),
            sends={cell: tuple(sorted(dsts)) for cell, dsts in sends[rank].items()},
            recvs={
                src: tuple(sorted(cells, key=position.__getitem__))
                for (src, dst), cells in sorted(channel.items())
                if dst == rank
            },
            uses_previous_output=uses_previous_output,
        )
        for rank in range(world_size)
    ]


def sorted_step(cells: tuple[Cell, ...], index: int) -> tuple[Cell, ...]:
    """A step's cells by layer (the order outputs are sent in); a layer may appear only once per step."""
    ordered = sorted(cells)
    for left, right in itertools.pairwise(ordered):
        if left.layer == right.layer:
            raise ScheduleError(
                f"step {index} runs layer {left.layer} twice ({tuple(left)} and {tuple(right)}): "
                "a layer's state can only advance one segment per step"
            )
    return tuple(ordered)


def _owned_range(owners: list[int], rank: int) -> range:
    layers = [layer for layer, owner in enumerate(owners) if owner == rank]
    if not layers:
        raise ScheduleError(f"device {rank} runs no cell: every rank needs at least one layer")
    if layers != list(range(layers[0], layers[-1] + 1)):
        raise ScheduleError(
            f"device {rank} runs layers {layers}, which are not contiguous: a rank holds one contiguous stage"
        )
    return range(layers[0], layers[-1] + 1)


def _step_positions(schedule: Schedule) -> dict[Cell, tuple[int, int]]:
    """(step index, rank of the cell within its sorted step): the order in which a rank sends outputs."""
    return {cell: (index, i) for index, step in enumerate(schedule.steps) for i, cell in enumerate(sorted(step.cells))}
