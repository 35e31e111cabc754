"""Diagonal forward, anti-diagonal backward: each forward wave in one batched step, then the waves reversed.

On a layer-local DAG forward step t holds l + s = t and backward steps run t = S + L - 2 down to 0, so
a training step costs 2 (S + L - 1) batched steps instead of 2 S L. Every cell's activations are kept
from its F to its B (see 'checkpointed' to trade them for recomputation).
"""

from rmtsched.sched.train_dag import Phase, TrainGraph
from rmtsched.sched.train_registry import TrainOptions, register_train_scheduler
from rmtsched.sched.train_schedule import TrainSchedule, TrainStep
from rmtsched.sched.train_schedulers.common import require_no_budget, require_single_device, wave_batches


@register_train_scheduler("diagonal")
def diagonal(graph: TrainGraph, options: TrainOptions) -> TrainSchedule:
    require_no_budget("diagonal", options)
    require_single_device("diagonal", options)
    batches = wave_batches(graph, options.max_width)
    steps = [TrainStep(Phase.FORWARD, batch) for batch in batches]
    steps += [TrainStep(Phase.BACKWARD, batch) for batch in reversed(batches)]
    return TrainSchedule(tuple(steps), "diagonal", {"max_width": options.max_width, "truncation": graph.truncation})
