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

from collections import deque
from collections.abc import Sequence

from rmtsched.errors import ScheduleError
from rmtsched.sched.dag import Cell, CellGraph
from rmtsched.sched.registry import register_scheduler
from rmtsched.sched.schedule import Schedule, SchedulerOptions, Step, Transfer
from rmtsched.sched.schedulers.ordering import segment_major_order


def balanced_stages(layer_costs: Sequence[float], num_stages: int) -> list[range]:
    """Split layers into ``num_stages`` contiguous non-empty ranges minimising the largest stage cost.

    Exact dynamic programme over split points, O(P * L^2): fine for any real layer count. Among equal
    optima it prefers earlier stages to be no smaller than later ones.
    """
    num_layers = len(layer_costs)
    if num_stages > num_layers:
        raise ScheduleError(f"cannot split {num_layers} layers into {num_stages} non-empty pipeline stages")
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


@register_scheduler("pipelined")
def pipelined(graph: CellGraph, options: SchedulerOptions) -> Schedule:
    num_devices = options.num_devices
    costs = options.layer_costs or (1.0,) * graph.num_layers
    if len(costs) != graph.num_layers:
        raise ScheduleError(f"layer_costs has {len(costs)} entries for a graph of {graph.num_layers} layers")
    stages = balanced_stages(costs, num_devices)
    device_of_layer = [device for device, stage in enumerate(stages) for _ in stage]
    queues: list[deque[Cell]] = [deque() for _ in range(num_devices)]
    for cell in segment_major_order(graph):
        queues[device_of_layer[cell.layer]].append(cell)

    issued: set[Cell] = set()
    steps: list[Step] = []
    while any(queues):
        tick = [
            queue.popleft()
            for queue in queues
            if queue and all(pred in issued for pred in graph.predecessors(queue[0]))
        ]
        steps.extend(Step((cell,), device_of_layer[cell.layer]) for cell in tick)
        issued.update(tick)

    transfers = tuple(
        dict.fromkeys(
            Transfer(source, device_of_layer[source.layer], device_of_layer[target.layer])
            for source, target in graph.edges()
            if device_of_layer[source.layer] != device_of_layer[target.layer]
        )
    )
    stage_bounds = [[stage.start, stage.stop] for stage in stages]
    return Schedule(
        tuple(steps), transfers, "pipelined", num_devices, {"num_devices": num_devices, "stages": stage_bounds}
    )
