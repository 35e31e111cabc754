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
from rmtsched.sched.train_dag import Phase, TrainCell, TrainGraph
from rmtsched.sched.train_registry import (
    TrainOptions,
    available_train_schedulers,
    get_train_scheduler,
    make_train_schedule,
    register_train_scheduler,
)
from rmtsched.sched.train_render import render_train_grid
from rmtsched.sched.train_schedule import TrainSchedule, TrainStep, TrainTransfer
from rmtsched.sched.train_validate import validate_train
from rmtsched.sched.validate import validate

__all__ = [
    "Cell",
    "CellGraph",
    "DependencyRule",
    "GlobalMemoryRule",
    "LayerLocalRule",
    "ModelLayout",
    "Phase",
    "Schedule",
    "SchedulerOptions",
    "Step",
    "TrainCell",
    "TrainGraph",
    "TrainOptions",
    "TrainSchedule",
    "TrainStep",
    "TrainTransfer",
    "Transfer",
    "available_rules",
    "available_schedulers",
    "available_train_schedulers",
    "build_cell_graph",
    "get_rule",
    "get_scheduler",
    "get_train_scheduler",
    "graph_for_tokens",
    "grid_note",
    "make_schedule",
    "make_train_schedule",
    "register_scheduler",
    "register_train_scheduler",
    "render_grid",
    "render_train_grid",
    "split_segments",
    "validate",
    "validate_train",
    "warmup_graph",
]
