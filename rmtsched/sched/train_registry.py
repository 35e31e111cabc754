"""The training-scheduler registry: training schedulers are found by name, a user's own registers the same way.

A training scheduler is a pure function ``(TrainGraph, TrainOptions) -> TrainSchedule``; register one with
``@register_train_scheduler("name")``. Kept apart from the forward registry, whose schedulers return
forward ``Schedule``s: a name means one kind of function in each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rmtsched.errors import ScheduleError
from rmtsched.sched.registry import NamedRegistry
from rmtsched.sched.train_dag import TrainGraph
from rmtsched.sched.train_schedule import TrainSchedule


@dataclass(frozen=True)
class TrainOptions:
    """Options every training scheduler receives; each refuses the ones it cannot honour.

    ``max_width`` caps the cells of one step; ``memory_budget`` caps how many cells' forward activations
    are held at once (stored from F or rebuilt by R, until the cell's B), which forces recomputation;
    ``num_devices`` spreads layers over devices (the 'pipelined' training scheduler).
    """

    max_width: int | None = None
    memory_budget: int | None = None
    num_devices: int = 1

    def __post_init__(self) -> None:
        for name in ("max_width", "memory_budget"):
            value = getattr(self, name)
            if value is not None and not _is_positive_int(value):
                raise ScheduleError(f"{name} must be a positive integer or None, got {value!r}")
        if not _is_positive_int(self.num_devices):
            raise ScheduleError(f"number of devices must be a positive integer, got {self.num_devices!r}")


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


TrainScheduler = Callable[[TrainGraph, TrainOptions], TrainSchedule]

_REGISTRY: NamedRegistry[TrainScheduler] = NamedRegistry("training scheduler", "rmtsched.sched.train_schedulers")


def register_train_scheduler(name: str) -> Callable[[TrainScheduler], TrainScheduler]:
    """Decorator: make ``function`` available as training scheduler ``name`` (replacing any previous one)."""
    return _REGISTRY.register(name)


def available_train_schedulers() -> list[str]:
    return _REGISTRY.names()


def get_train_scheduler(name: str) -> TrainScheduler:
    return _REGISTRY.get(name)


def make_train_schedule(graph: TrainGraph, name: str, **options: Any) -> TrainSchedule:
    """Run training scheduler ``name`` on ``graph`` with ``TrainOptions(**options)``."""
    return get_train_scheduler(name)(graph, TrainOptions(**options))


__all__ = [
    "TrainOptions",
    "TrainScheduler",
    "available_train_schedulers",
    "get_train_scheduler",
    "make_train_schedule",
    "register_train_scheduler",
]
