"""Greedy list scheduling for any DAG: each step runs the ready cells with the longest remaining path.

Ready cells are ranked by bottom level (cells on the longest path from the cell to the end of the
run), ties by layer then segment, and up to ``max_width`` of them run together. With no cap every
ready cell runs, which on a layer-local DAG is exactly the diagonal schedule; on a global-memory DAG
only one cell is ever ready, so every step has width one. The loop works on flat cell indices and
one precomputed integer rank per cell, so it scales to a million cells.
"""

from __future__ import annotations

import numpy as np

from rmtsched.sched._gc import builds_bulk
from rmtsched.sched.dag import CellGraph
from rmtsched.sched.registry import register_scheduler
from rmtsched.sched.schedule import Schedule, SchedulerOptions, Step
from rmtsched.sched.schedulers.ordering import bottom_levels, require_single_device, successor_csr


@register_scheduler("greedy")
@builds_bulk
def greedy(graph: CellGraph, options: SchedulerOptions) -> Schedule:
    require_single_device("greedy", options)
    num_cells, num_layers, num_segments = graph.num_cells, graph.num_layers, graph.num_segments
    offsets, successors, remaining = successor_csr(graph)
    bottom = bottom_levels(graph)
    flat = np.arange(num_cells, dtype=np.int64)
    layer_major = (flat % num_layers) * num_segments + flat // num_layers  # (layer, segment) order
    # One integer per cell orders (-bottom level, layer, segment): layer_major < num_cells breaks ties.
    rank = ((int(bottom.max()) - bottom) * num_cells + layer_major).tolist()
    layer_major_list = layer_major.tolist()
    cells = list(graph.cells())

    ready = [i for i in range(num_cells) if remaining[i] == 0]
    steps: list[Step] = []
    while ready:
        ready.sort(key=rank.__getitem__)
        width = options.max_width or len(ready)
        chosen, ready = ready[:width], ready[width:]
        chosen.sort(key=layer_major_list.__getitem__)
        steps.append(Step(tuple(map(cells.__getitem__, chosen))))
        for i in chosen:
            for j in successors[offsets[i] : offsets[i + 1]]:
                remaining[j] -= 1
                if remaining[j] == 0:
                    ready.append(j)
    return Schedule(tuple(steps), scheduler="greedy", options={"max_width": options.max_width})
