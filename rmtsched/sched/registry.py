"""The scheduler registry: schedulers are found by name, and a user's own registers the same way.

A scheduler is a pure function ``(graph, options) -> Schedule``. Register one with
``@register_scheduler("name")``; ``make_schedule`` looks it up and builds the options.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from rmtsched.errors import ScheduleError
from rmtsched.sched.dag import CellGraph
from rmtsched.sched.schedule import Schedule, SchedulerOptions

Scheduler = Callable[[CellGraph, SchedulerOptions], Schedule]
F = TypeVar("F", bound=Callable[..., Any])


class NamedRegistry(Generic[F]):
    """Functions of one ``kind`` found by name; the built-ins register when ``builtins`` (a module) is first
    imported, lazily, so the registry module itself has no import cycle. Shared by the forward and the
    training schedulers (a name means one kind of function in each)."""

    def __init__(self, kind: str, builtins: str):
        self.kind = kind
        self._builtins = builtins
        self.functions: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: make ``function`` available as ``name`` (replacing any previous one)."""

        def decorate(function: F) -> F:
            self.functions[name] = function
            return function

        return decorate

    def names(self) -> list[str]:
        importlib.import_module(self._builtins)
        return sorted(self.functions)

    def get(self, name: str) -> F:
        importlib.import_module(self._builtins)
        if name not in self.functions:
            raise ScheduleError(f"unknown {self.kind} {name!r}: expected one of {sorted(self.functions)}")
        return self.functions[name]


_REGISTRY: NamedRegistry[Scheduler] = NamedRegistry("scheduler", "rmtsched.sched.schedulers")


def register_scheduler(name: str) -> Callable[[Scheduler], Scheduler]:
    """Decorator: make ``function`` available as scheduler ``name`` (replacing any previous one)."""
    return _REGISTRY.register(name)


def available_schedulers() -> list[str]:
    return _REGISTRY.names()


def get_scheduler(name: str) -> Scheduler:
    return _REGISTRY.get(name)


def make_schedule(graph: CellGraph, name: str, **options: Any) -> Schedule:
    """Run scheduler ``name`` on ``graph`` with ``SchedulerOptions(**options)``."""
    return get_scheduler(name)(graph, SchedulerOptions(**options))
