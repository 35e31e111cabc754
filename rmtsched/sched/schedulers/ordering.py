"""Orderings of a cell graph that several schedulers share.

The built-in rules have closed forms (segment-major order is topological for both, bottom levels are
arithmetic); user-defined graphs fall back to generic graph algorithms.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from rmtsched.errors import ScheduleError
from rmtsched.sched.dag import Cell, CellGraph, GlobalMemoryRule, LayerLocalRule
from rmtsched.sched.schedule import SchedulerOptions


def has_builtin_rule(graph: CellGraph) -> bool:
    return isinstance(graph.rule, LayerLocalRule | GlobalMemoryRule)


def segment_major_order(graph: CellGraph) -> list[Cell]:
    """A topological order that prefers finishing segment s before touching s+1 (ties by layer)."""
    if has_builtin_rule(graph):
        return list(graph.cells())
    return priority_topological_order(graph, key=lambda cell: (cell.segment, cell.layer))


def priority_topological_order(graph: CellGraph, key: Callable[[Cell], tuple]) -> list[Cell]:
    """Kahn's algorithm that always takes the ready cell with the smallest ``key``."""
    indegree = {cell: len(graph.predecessors(cell)) for cell in graph.cells()}
    ready = [(key(cell), cell) for cell, degree in indegree.items() if degree == 0]
    heapq.heapify(ready)
    order: list[Cell] = []
    while ready:
        _, cell = heapq.heappop(ready)
        order.append(cell)
        for succ in graph.successors(cell):
            indegree[succ] -= 1
            if indegree[succ] == 0:
                heapq.heappush(ready, (key(succ), succ))
    return order


def bottom_levels(graph: CellGraph) -> Callable[[Cell], int]:
    """Cells on the longest path from each cell to a sink, itself included (the critical-path priority)."""
    num_layers, num_segments = graph.num_layers, graph.num_segments
    if isinstance(graph.rule, LayerLocalRule):
        return lambda cell: (num_layers - cell.layer) + (num_segments - 1 - cell.segment)
    if isinstance(graph.rule, GlobalMemoryRule):
        return lambda cell: (num_segments - cell.segment) * num_layers - cell.layer
    levels: dict[Cell, int] = {}
    for cell in reversed(graph.topological_order()):
        levels[cell] = 1 + max((levels[succ] for succ in graph.successors(cell)), default=0)
    return levels.__getitem__


def require_single_device(name: str, options: SchedulerOptions) -> None:
    if options.num_devices != 1:
        raise ScheduleError(
            f"scheduler {name!r} runs on one device, got num_devices={options.num_devices}; "
            "use 'pipelined' to spread layers over devices"
        )


def chunks(cells: list[Cell], max_width: int | None) -> list[tuple[Cell, ...]]:
    """Split a batch of independent cells into steps of at most ``max_width`` cells."""
    if max_width is None:
        return [tuple(cells)]
    return [tuple(cells[i : i + max_width]) for i in range(0, len(cells), max_width)]
