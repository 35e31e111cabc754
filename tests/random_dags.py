"""Random cell DAGs and random valid schedules, shared by the sched, sim, plug-in and backend tests.

One copy, so every area tests against the same notion of "any valid schedule": steps are random
non-empty batches of ready cells (ready cells never depend on each other, so any batch of them is a
legal step) on random devices, with one transfer per producer and destination device for every edge
that crosses devices. Everything draws from a caller's ``random.Random``, so a hypothesis-drawn seed
reproduces the case. Importable as ``random_dags`` because pyproject.toml puts ``tests/`` on the path.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from rmtsched.sched import Cell, CellGraph, Schedule, Step, Transfer

Edges = list[tuple[Cell, Cell]]


def shuffled_forward_edges(
    num_layers: int, num_segments: int, rng: random.Random, fan_ins: Sequence[int] = (0, 1, 1, 2, 3)
) -> Edges:
    """A random DAG over the grid: edges only go forward in a shuffled order of the cells, so it is acyclic.

    Each cell takes ``rng.choice(fan_ins)`` predecessors (fewer near the start) from the cells before it.
    """
    order = [Cell(layer, segment) for segment in range(num_segments) for layer in range(num_layers)]
    rng.shuffle(order)
    edges: Edges = []
    for position, target in enumerate(order[1:], start=1):
        fan_in = min(position, rng.choice(fan_ins))
        edges.extend((source, target) for source in rng.sample(order[:position], fan_in))
    return edges


def predecessor_rule(edges: Edges) -> Callable[[Cell, int, int], list[Cell]]:
    """The edges as a user dependency rule: a predecessor function ``(cell, num_layers, num_segments)``."""
    preds: dict[Cell, list[Cell]] = {}
    for source, target in edges:
        preds.setdefault(target, []).append(source)
    return lambda cell, num_layers, num_segments: preds.get(cell, [])


def random_valid_schedule(
    graph: CellGraph, rng: random.Random, num_devices: int = 1, *, shuffle_transfers: bool = False
) -> Schedule:
    """A random topological schedule of ``graph`` on ``num_devices`` devices.

    ``shuffle_transfers`` also shuffles the transfer list (the validator must not care about its order).
    """
    remaining = {cell: len(graph.predecessors(cell)) for cell in graph.cells()}
    ready = [cell for cell, count in remaining.items() if count == 0]
    steps: list[Step] = []
    device_of: dict[Cell, int] = {}
    while ready:
        rng.shuffle(ready)
        width = rng.randint(1, len(ready))
        batch, ready = ready[:width], ready[width:]
        device = rng.randrange(num_devices)
        steps.append(Step(tuple(batch), device))
        for cell in batch:
            device_of[cell] = device
            for successor in graph.successors(cell):
                remaining[successor] -= 1
                if remaining[successor] == 0:
                    ready.append(successor)
    transfers = list(
        dict.fromkeys(
            Transfer(source, device_of[source], device_of[target])
            for source, target in graph.edges()
            if device_of[source] != device_of[target]
        )
    )
    if shuffle_transfers:
        rng.shuffle(transfers)
    return Schedule(tuple(steps), tuple(transfers), "random", num_devices)
