"""The pipelined schedule: contiguous layer stages, one per device, segments flowing stage to stage.

Device p owns layers [b_p, b_{p+1}); it runs its layers of segment s (one cell per step) while
device p+1 runs segment s-1, GPipe-style fill and drain. Stages are balanced by ``layer_costs``
(uniform by default) to minimise the most expensive stage. The global step order comes from a
unit-time list simulation: at each tick every device issues the next cell of its queue (a shared
segment-major topological order) whose predecessors were issued at earlier ticks; this can never
deadlock and, on a layer-local DAG, yields exactly the fill/steady/drain pattern. Every edge that
crosses a stage boundary gets a transfer. With one device it is the sequential schedule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rmtsched.errors import ScheduleError
from rmtsched.sched._gc import builds_bulk
from rmtsched.sched.dag import Cell, CellGraph
from rmtsched.sched.registry import register_scheduler
from rmtsched.sched.schedule import Schedule, SchedulerOptions, Step, Transfer
from rmtsched.sched.schedulers.ordering import predecessor_csr, segment_major_indices


def balanced_stages(layer_costs: Sequence[float], num_stages: int) -> list[range]:
    """Split layers into ``num_stages`` contiguous non-empty ranges minimising the largest stage cost.

    Exact dynamic programme over split points, O(P * L^2): fine for any real layer count. Among equal
    optima it prefers earlier stages to be no smaller than later ones.
    """
    num_layers = len(layer_costs)
    if num_stages <= 0:
        raise ScheduleError(f"number of pipeline stages must be a positive integer, got {num_stages!r}")
    if num_stages > num_layers:
        raise ScheduleError(
            f"cannot split {num_layers} layers into {num_stages} non-empty pipeline stages: "
            f"expected at most {num_layers} devices"
        )
    prefix = [0.0]
    for cost in layer_costs:
        prefix.append(prefix[-1] + cost)
    inf = float("inf")
    # best[p][l]: smallest max-stage cost placing the first l layers into p stages; cut[p][l]: last split.
    best = [[inf] * (num_layers + 1) for _ in range(num_stages + 1)]
    cut = [[0] * (num_layers + 1) for _ in range(num_stages + 1)]
    best[0][0] = 0.0
    for stages in range(1, num_stages + 1):
        for end in range(stages, num_layers + 1):
            for start in range(end - 1, stages - 2, -1):
                candidate = max(best[stages - 1][start], prefix[end] - prefix[start])
                if candidate < best[stages][end] - 1e-12 * max(1.0, candidate):
                    best[stages][end], cut[stages][end] = candidate, start
    bounds = [num_layers]
    for stages in range(num_stages, 0, -1):
        bounds.append(cut[stages][bounds[-1]])
    bounds.reverse()
    return [range(bounds[i], bounds[i + 1]) for i in range(num_stages)]


def pipeline_stages(num_layers: int, options: SchedulerOptions) -> list[range]:
    """Each device's layers: ``balanced_stages`` of ``options.layer_costs`` (uniform when None).

    The scheduler and the simulator's closed form both split layers here, so they cannot disagree.
    """
    costs = options.layer_costs or (1.0,) * num_layers
    if len(costs) != num_layers:
        raise ScheduleError(f"layer_costs has {len(costs)} entries for a graph of {num_layers} layers")
    return balanced_stages(costs, options.num_devices)


@register_scheduler("pipelined")
@builds_bulk
def pipelined(graph: CellGraph, options: SchedulerOptions) -> Schedule:
    num_devices = options.num_devices
    stages = pipeline_stages(graph.num_layers, options)
    device_of_layer = np.array([device for device, stage in enumerate(stages) for _ in stage], dtype=np.int64)
    device_of = device_of_layer[np.arange(graph.num_cells) % graph.num_layers]
    cells = list(graph.cells())
    steps = [Step((cells[i],), device) for i, device in _issue_order(graph, device_of.tolist(), num_devices)]
    stage_bounds = [[stage.start, stage.stop] for stage in stages]
    return Schedule(
        tuple(steps),
        _transfers(graph, device_of, cells),
        "pipelined",
        num_devices,
        {"num_devices": num_devices, "stages": stage_bounds},
    )


def _issue_order(graph: CellGraph, device_of: list[int], num_devices: int) -> list[tuple[int, int]]:
    """The unit-time list simulation: (flat cell index, device) in global issue order.

    Each tick, every device whose next queued cell has all predecessors issued at earlier ticks issues
    it. Queues follow one shared topological order, so the earliest unissued cell is always ready and
    every tick makes progress.
    """
    queues: list[list[int]] = [[] for _ in range(num_devices)]
    for i in segment_major_indices(graph):
        queues[device_of[i]].append(i)
    offsets, predecessors = predecessor_csr(graph)
    issued = bytearray(graph.num_cells)
    heads = [0] * num_devices
    order: list[tuple[int, int]] = []
    while len(order) < graph.num_cells:
        tick = []
        for device, queue in enumerate(queues):
            if heads[device] < len(queue):
                i = queue[heads[device]]
                if all(issued[j] for j in predecessors[offsets[i] : offsets[i + 1]]):
                    tick.append((i, device))
                    heads[device] += 1
        if not tick:  # only possible if a rule claiming acyclic_by_construction has a cycle
            heads_left = [queue[head] for queue, head in zip(queues, heads, strict=True) if head < len(queue)]
            stuck = [(i % graph.num_layers, i // graph.num_layers) for i in heads_left]
            raise ScheduleError(f"pipelined: no device can issue; cells {stuck} wait on each other (a cycle)")
        for i, _ in tick:
            issued[i] = 1
        order.extend(tick)
    return order


def _transfers(graph: CellGraph, device_of: np.ndarray, cells: list[Cell]) -> tuple[Transfer, ...]:
    """One transfer per (producer cell, consumer device) across a stage boundary, by cell then device."""
    sources, targets = graph.edge_index()
    crossing = device_of[sources] != device_of[targets]
    pairs = np.unique(np.stack([sources[crossing], device_of[targets[crossing]]], axis=1), axis=0)
    source_devices = device_of.tolist()
    return tuple(Transfer(cells[i], source_devices[i], dst) for i, dst in pairs.tolist())
