"""Greedy training schedule for any DAG: list scheduling of F and B cells by longest remaining path.

Each step takes the ready node with the longest path to the end of the training step, and with it up to
``max_width`` ready nodes of the same phase (a step is one phase), highest priority first. Ready nodes
never depend on each other, so every step is legal whatever the dependency rule or truncation.
"""

from __future__ import annotations

from rmtsched.sched.train_dag import TrainCell, TrainGraph
from rmtsched.sched.train_registry import TrainOptions, register_train_scheduler
from rmtsched.sched.train_schedule import TrainSchedule, TrainStep
from rmtsched.sched.train_schedulers.common import require_no_budget, require_single_device


@register_train_scheduler("greedy")
def greedy(graph: TrainGraph, options: TrainOptions) -> TrainSchedule:
    require_no_budget("greedy", options)
    require_single_device("greedy", options)
    successors: dict[TrainCell, list[TrainCell]] = {node: [] for node in graph.cells()}
    remaining = {}
    for node in successors:
        preds = graph.predecessors(node)
        remaining[node] = len(preds)
        for pred in preds:
            successors[pred].append(node)
    priority = _bottom_levels(successors, remaining)
    ready = [node for node, count in remaining.items() if count == 0]
    steps: list[TrainStep] = []
    while ready:
        ready.sort(key=lambda node: (-priority[node], node.layer, node.segment))
        phase = ready[0].phase
        chosen = [node for node in ready if node.phase is phase][: options.max_width]
        ready = [node for node in ready if node not in set(chosen)]
        steps.append(TrainStep(phase, tuple(sorted(node.cell for node in chosen))))
        for node in chosen:
            for succ in successors[node]:
                remaining[succ] -= 1
                if remaining[succ] == 0:
                    ready.append(succ)
    return TrainSchedule(tuple(steps), "greedy", {"max_width": options.max_width, "truncation": graph.truncation})


def _bottom_levels(
    successors: dict[TrainCell, list[TrainCell]], indegree: dict[TrainCell, int]
) -> dict[TrainCell, int]:
    """Nodes on the longest path from each node to a sink, itself included (Kahn order, then backwards)."""
    remaining = dict(indegree)
    order = [node for node, count in remaining.items() if count == 0]
    for node in order:  # the list grows while we walk it: a topological order
        for succ in successors[node]:
            remaining[succ] -= 1
            if remaining[succ] == 0:
                order.append(succ)
    levels: dict[TrainCell, int] = {}
    for node in reversed(order):
        levels[node] = 1 + max((levels[succ] for succ in successors[node]), default=0)
    return levels
