"""Random valid training schedules, shared by the sched, sim and backend tests.

One notion of "any valid training schedule": a random set of cells is recomputed, then steps are random
non-empty one-phase batches of ready nodes (F, R or B) until every node has run. Ready nodes never depend
on each other, so any such batch is a legal step. Everything draws from a caller's ``random.Random``.
"""

from __future__ import annotations

import random

from rmtsched.sched import Phase, TrainCell, TrainGraph, TrainSchedule, TrainStep


def random_train_schedule(graph: TrainGraph, rng: random.Random, recompute_share: float = 0.3) -> TrainSchedule:
    """A random topological training schedule; about ``recompute_share`` of the cells get an R step."""
    recomputed = {cell for cell in graph.forward.cells() if rng.random() < recompute_share}
    nodes = list(graph.cells()) + [TrainCell(Phase.RECOMPUTE, *cell) for cell in sorted(recomputed)]
    successors: dict[TrainCell, list[TrainCell]] = {node: [] for node in nodes}
    remaining: dict[TrainCell, int] = {}
    for node in nodes:
        preds = graph.predecessors(node, recomputed=node.cell in recomputed)
        remaining[node] = len(preds)
        for pred in preds:
            successors[pred].append(node)
    ready = [node for node in nodes if remaining[node] == 0]
    steps: list[TrainStep] = []
    while ready:
        phase = rng.choice(sorted({node.phase for node in ready}))
        of_phase = [node for node in ready if node.phase is phase]
        rng.shuffle(of_phase)
        batch = of_phase[: rng.randint(1, len(of_phase))]
        ready = [node for node in ready if node not in batch]
        steps.append(TrainStep(phase, tuple(node.cell for node in batch)))
        for node in batch:
            for succ in successors[node]:
                remaining[succ] -= 1
                if remaining[succ] == 0:
                    ready.append(succ)
    return TrainSchedule(tuple(steps), "random", {"truncation": graph.truncation})
