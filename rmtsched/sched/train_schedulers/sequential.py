"""Sequential BPTT: every forward cell one at a time segment-major, then every backward cell in reverse.

This is ``loss.backward()`` through the sequential forward, the reference every training schedule must
reproduce bit for bit. Reversing a topological order of the forward DAG is a valid backward order,
since each backward edge is a forward edge reversed (truncation only removes edges).
"""

from rmtsched.sched.schedulers.ordering import segment_major_order
from rmtsched.sched.train_dag import Phase, TrainGraph
from rmtsched.sched.train_registry import TrainOptions, register_train_scheduler
from rmtsched.sched.train_schedule import TrainSchedule, TrainStep
from rmtsched.sched.train_schedulers.common import require_no_budget, require_single_device


@register_train_scheduler("sequential")
def sequential(graph: TrainGraph, options: TrainOptions) -> TrainSchedule:
    """2 L S steps of width one (``max_width`` is irrelevant)."""
    require_no_budget("sequential", options)
    require_single_device("sequential", options)
    order = segment_major_order(graph.forward)
    forward = [TrainStep(Phase.FORWARD, (cell,)) for cell in order]
    backward = [TrainStep(Phase.BACKWARD, (cell,)) for cell in reversed(order)]
    return TrainSchedule((*forward, *backward), "sequential", {"truncation": graph.truncation})
