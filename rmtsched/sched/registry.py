"""The scheduler registry: schedulers are found by name, and a user's own registers the same way.

A scheduler is a pure function ``(graph, options) -> Schedule``. Register one with
``@register_scheduler("name")``; ``make_schedule`` looks it up and builds the options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rmtsched.errors import ScheduleError
from rmtsched.sched.dag import CellGraph
from rmtsched.sched.schedule import Schedule, SchedulerOptions

Scheduler = Callable[[CellGraph, SchedulerOptions], Schedule]

_SCHEDULERS: dict[str, Scheduler] = {}


def register_scheduler(name: str) -> Callable[[Scheduler], Scheduler]:
    """Decorator: make ``function`` available as scheduler ``name`` (replacing any previous one)."""

    def decorate(function: Scheduler) -> Scheduler:
        _SCHEDULERS[name] = function
        return function

    return decorate


def _load_builtin_schedulers() -> None:
    # Importing the package registers the built-ins; done lazily so registry.py has no import cycle.
    import rmtsched.sched.schedulers  # noqa: F401


def available_schedulers() -> list[str]:
    _load_builtin_schedulers()
    return sorted(_SCHEDULERS)


def get_scheduler(name: str) -> Scheduler:
    _load_builtin_schedulers()
    if name not in _SCHEDULERS:
        raise ScheduleError(f"unknown scheduler {name!r}: expected one of {sorted(_SCHEDULERS)}")
    return _SCHEDULERS[name]


def make_schedule(graph: CellGraph, name: str, **options: Any) -> Schedule:
    """Run scheduler ``name`` on ``graph`` with ``SchedulerOptions(**options)``."""
    return get_scheduler(name)(graph, SchedulerOptions(**options))
