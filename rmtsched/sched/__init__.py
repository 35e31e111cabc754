"""The scheduling layer: cell DAGs, the schedule IR, schedulers and the validator.

Nothing here imports ``rmtsched.sim`` or ``rmtsched.backends``: a schedule is plain data that both of
those interpret.
"""

from rmtsched.sched.dag import (
    Cell,
    CellGraph,
    DependencyRule,
    GlobalMemoryRule,
    LayerLocalRule,
    ModelLayout,
    available_rules,
    build_cell_graph,
    get_rule,
    graph_for_tokens,
    split_segments,
    warmup_graph,
)
from rmtsched.sched.registry import available_schedulers, get_scheduler, make_schedule, register_scheduler
from rmtsched.sched.render import grid_note, render_grid
from rmtsched.sched.schedule import Schedule, SchedulerOptions, Step, Transfer
from rmtsched.sched.validate import validate

__all__ = [
    "Cell",
    "CellGraph",
    "DependencyRule",
    "GlobalMemoryRule",
    "LayerLocalRule",
    "ModelLayout",
    "Schedule",
    "SchedulerOptions",
    "Step",
    "Transfer",
    "available_rules",
    "available_schedulers",
    "build_cell_graph",
    "get_rule",
    "get_scheduler",
    "graph_for_tokens",
    "grid_note",
    "make_schedule",
    "register_scheduler",
    "render_grid",
    "split_segments",
    "validate",
    "warmup_graph",
]
