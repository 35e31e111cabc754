"""Greedy list scheduling for any DAG: each step runs the ready cells with the longest remaining path.

Ready cells are ranked by bottom level (cells on the longest path from the cell to the end of the
run), ties by layer then segment, and up to ``max_width`` of them run together. With no cap every
ready cell runs, which on a layer-local DAG is exactly the diagonal schedule; on a global-memory DAG
only one cell is ever ready, so every step has width one.
"""

from __future__ import annotations

from rmtsched.sched.dag import Cell, CellGraph
from rmtsched.sched.registry import register_scheduler
from rmtsched.sched.schedule import Schedule, SchedulerOptions, Step
from rmtsched.sched.schedulers.ordering import bottom_levels, require_single_device


@register_scheduler("greedy")
def greedy(graph: CellGraph, options: SchedulerOptions) -> Schedule:
    require_single_device("greedy", options)
    priority = bottom_levels(graph)
    remaining = {cell: len(graph.predecessors(cell)) for cell in graph.cells()}
    ready: list[Cell] = [cell for cell, count in remaining.items() if count == 0]
    steps: list[Step] = []
    while ready:
        ready.sort(key=lambda cell: (-priority(cell), cell.layer, cell.segment))
        chosen, ready = ready[: options.max_width or len(ready)], ready[options.max_width or len(ready) :]
        steps.append(Step(tuple(sorted(chosen))))
        for cell in chosen:
            for succ in graph.successors(cell):
                remaining[succ] -= 1
                if remaining[succ] == 0:
                    ready.append(succ)
    return Schedule(tuple(steps), scheduler="greedy", options={"max_width": options.max_width})
