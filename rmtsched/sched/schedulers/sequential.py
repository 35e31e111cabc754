"""The sequential schedule: one cell per step, segment-major (every layer of s before s+1).

This is how a recurrent memory transformer runs naively, and the reference every other schedule
must reproduce bit for bit.
"""

from rmtsched.sched._gc import builds_bulk
from rmtsched.sched.dag import CellGraph
from rmtsched.sched.registry import register_scheduler
from rmtsched.sched.schedule import Schedule, SchedulerOptions, Step
from rmtsched.sched.schedulers.ordering import require_single_device, segment_major_order


@register_scheduler("sequential")
@builds_bulk
def sequential(graph: CellGraph, options: SchedulerOptions) -> Schedule:
    """S * L steps of width one in a segment-major topological order (``max_width`` is irrelevant)."""
    require_single_device("sequential", options)
    steps = tuple(Step((cell,)) for cell in segment_major_order(graph))
    return Schedule(steps, scheduler="sequential")
