"""Pipelined training: contiguous layer stages, one per device, forward and backward cells interleaved (1F1B).

Device p owns the layers of stage p (balanced as the forward 'pipelined' scheduler balances them) and runs
the F and B cells of those layers, one cell per step. The global order comes from a unit-time list
simulation: each tick every device issues one node whose predecessors were issued at earlier ticks,
preferring a backward cell (it frees activations, the 1F1B rule), latest segment and highest layer first,
over a forward cell, earliest segment and lowest layer first. Some node is always ready in an acyclic
graph, so every tick makes progress. Every edge across a stage boundary gets a transfer of its producer's
output (hidden states forward, their gradients backward). Truncation is what lets the waves interleave:
under full BPTT no B cell is ready before the last segment's forward.
"""

from __future__ import annotations

import heapq

from rmtsched.sched.schedule import SchedulerOptions
from rmtsched.sched.schedulers.pipelined import pipeline_stages
from rmtsched.sched.train_dag import Phase, TrainCell, TrainGraph
from rmtsched.sched.train_registry import TrainOptions, register_train_scheduler
from rmtsched.sched.train_schedule import TrainSchedule, TrainStep, TrainTransfer
from rmtsched.sched.train_schedulers.common import require_no_budget


def _priority(node: TrainCell) -> tuple[int, int, int]:
    if node.phase is Phase.BACKWARD:
        return (0, -node.segment, -node.layer)
    return (1, node.segment, node.layer)


@register_train_scheduler("pipelined")
def pipelined(graph: TrainGraph, options: TrainOptions) -> TrainSchedule:
    require_no_budget("pipelined", options)
    stages = pipeline_stages(graph.num_layers, SchedulerOptions(num_devices=options.num_devices))
    device_of_layer = {layer: device for device, stage in enumerate(stages) for layer in stage}
    successors: dict[TrainCell, list[TrainCell]] = {node: [] for node in graph.cells()}
    waiting: dict[TrainCell, int] = {}
    for node in successors:
        preds = graph.predecessors(node)
        waiting[node] = len(preds)
        for pred in preds:
            successors[pred].append(node)
    ready: list[list[tuple[tuple[int, int, int], TrainCell]]] = [[] for _ in stages]
    for node, count in waiting.items():
        if count == 0:
            heapq.heappush(ready[device_of_layer[node.layer]], (_priority(node), node))
    steps: list[TrainStep] = []
    while any(ready):
        tick = [heapq.heappop(queue)[1] for queue in ready if queue]
        for node in tick:
            device = device_of_layer[node.layer]
            steps.append(TrainStep(node.phase, (node.cell,), device))
        for node in tick:  # successors become ready for the next tick, never this one
            for succ in successors[node]:
                waiting[succ] -= 1
                if waiting[succ] == 0:
                    heapq.heappush(ready[device_of_layer[succ.layer]], (_priority(succ), succ))
    transfers = dict.fromkeys(
        TrainTransfer(pred, device_of_layer[pred.layer], device_of_layer[node.layer])
        for node in successors
        for pred in graph.predecessors(node)
        if device_of_layer[pred.layer] != device_of_layer[node.layer]
    )
    stage_bounds = [[stage.start, stage.stop] for stage in stages]
    options_record = {"num_devices": options.num_devices, "stages": stage_bounds, "truncation": graph.truncation}
    return TrainSchedule(tuple(steps), "pipelined", options_record, tuple(transfers), options.num_devices)
