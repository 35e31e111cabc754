"""What one rank does in a multi-device training schedule: its steps, the values it receives and sends.

The values crossing cells are the training runner's mailbox entries (kind, cell): F(c) writes c's "hidden"
(read by F(l+1, s), and from the last layer by F(0, s+1) of a model reading its previous output) and its
"state" (read by F(l, s+1)); the B cell of each reader writes the matching gradient, read by B(c). A value
whose writer and reader run on different devices is sent right after the writer's step and received right
before the reader's. Pure data, like ``plan.RankPlan``: the launcher plans every rank before starting any.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from rmtsched.sched import Cell, Phase, TrainCell, TrainGraph, TrainSchedule

FoldLayer = int | None  # the layer whose rows a weight's gradient fold covers; None: the global weights


@dataclass(frozen=True)
class Crossing:
    """Value ``kind`` of ``cell`` moving between this rank and ``peer`` (sent to it, or received from it)."""

    kind: str
    cell: Cell
    peer: int


@dataclass(frozen=True)
class TrainRankPlan:
    """One rank's share of a training schedule.

    ``steps`` are the global indices of this rank's steps, in order; ``receives[i]`` and ``sends[i]`` are the
    values it receives before step i and sends after it. ``shared_folds`` are the folds (by ``FoldLayer``)
    whose uses run on several ranks, this one among them: it ships their per-use contributions, and
    ``owned_folds`` (every use here) their totals.
    """

    rank: int
    world_size: int
    steps: tuple[int, ...]
    receives: Mapping[int, tuple[Crossing, ...]]
    sends: Mapping[int, tuple[Crossing, ...]]
    shared_folds: frozenset[FoldLayer]
    owned_folds: frozenset[FoldLayer]


def value_flows(graph: TrainGraph, uses_previous_output: bool) -> Iterator[tuple[str, Cell, TrainCell, TrainCell]]:
    """Every mailbox value a training run may pass: (kind, cell, the node writing it, the node reading it).

    A gradient flows only where ``graph`` keeps it (truncation cuts the rest, and the schedule may run their
    B cells in either order). A value may still be absent at run time (RMT has no memory state; an unused
    input has no gradient); its crossing then carries its absence.
    """
    num_layers, num_segments = graph.num_layers, graph.num_segments
    for layer in range(num_layers):
        for segment in range(num_segments):
            cell = Cell(layer, segment)
            readers = []
            if layer + 1 < num_layers:
                readers.append(("hidden", Cell(layer + 1, segment)))
            elif uses_previous_output and segment + 1 < num_segments:
                readers.append(("hidden", Cell(0, segment + 1)))
            if segment + 1 < num_segments:
                readers.append(("state", Cell(layer, segment + 1)))
            for kind, reader in readers:
                yield kind, cell, TrainCell(Phase.FORWARD, *cell), TrainCell(Phase.FORWARD, *reader)
                if graph.keeps_gradient(cell, reader):
                    yield f"grad_{kind}", cell, TrainCell(Phase.BACKWARD, *reader), TrainCell(Phase.BACKWARD, *cell)


def fold_layers(fold: FoldLayer, num_layers: int) -> tuple[int, ...]:
    """The layers whose B cells use a fold's weight: its own layer, or for global weights the first and last."""
    return (fold,) if fold is not None else (0, num_layers - 1)


def build_train_plans(
    schedule: TrainSchedule, graph: TrainGraph, uses_previous_output: bool
) -> list[TrainRankPlan]:
    """Every rank's plan, one rank per device of ``schedule`` (validated against ``graph`` beforehand)."""
    step_of: dict[TrainCell, int] = {}
    device_of: dict[TrainCell, int] = {}
    for index, step in enumerate(schedule.steps):
        for node in step.nodes():
            step_of[node], device_of[node] = index, step.device
    world_size = schedule.num_devices
    receives: list[dict[int, list[Crossing]]] = [defaultdict(list) for _ in range(world_size)]
    sends: list[dict[int, list[Crossing]]] = [defaultdict(list) for _ in range(world_size)]
    for kind, cell, writer, reader in value_flows(graph, uses_previous_output):
        src, dst = device_of[writer], device_of[reader]
        if src != dst:
            sends[src][step_of[writer]].append(Crossing(kind, cell, dst))
            receives[dst][step_of[reader]].append(Crossing(kind, cell, src))
    fold_owners = {
        fold: {device_of[TrainCell(Phase.BACKWARD, layer, segment)]
               for layer in fold_layers(fold, graph.num_layers) for segment in range(graph.num_segments)}
        for fold in (None, *range(graph.num_layers))
    }  # fmt: skip
    return [
        TrainRankPlan(
            rank=rank,
            world_size=world_size,
            steps=tuple(index for index, step in enumerate(schedule.steps) if step.device == rank),
            receives={index: tuple(crossings) for index, crossings in receives[rank].items()},
            sends={index: tuple(crossings) for index, crossings in sends[rank].items()},
            shared_folds=frozenset(fold for fold, owners in fold_owners.items() if rank in owners and len(owners) > 1),
            owned_folds=frozenset(fold for fold, owners in fold_owners.items() if owners == {rank}),
        )
        for rank in range(world_size)
    ]


__all__ = ["Crossing", "FoldLayer", "TrainRankPlan", "build_train_plans", "fold_layers", "value_flows"]
