"""Wall-clock timing of backend calls: warm up, then repeat within a time budget (callers take the median).

CUDA work is asynchronous, so every timed call is bracketed by the backend's ``synchronize``; on the CPU
it is a no-op. (Whole schedules are timed by ``rmtsched.backends.torch.timing.time_schedule``.)
Medians, not minima: ``rmtsched compare`` reports medians of whole runs, and a calibration fitted to best
cases would under-predict them systematically. The ``process`` clock (CPU time of this
process) makes single-threaded CPU timings robust to other work on a shared machine.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rmtsched.backends.torch.timing import synchronize
from rmtsched.errors import SpecError

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}


def clock(name: str, device: torch.device, threads: int) -> Callable[[], float]:
    """The timer ``name``; the process clock only measures what it should for one CPU thread."""
    if name not in CLOCKS:
        raise SpecError(f"unknown clock {name!r}: expected one of {sorted(CLOCKS)}")
    if name == "process" and (device.type != "cpu" or threads != 1):
        raise SpecError(
            f"the process clock needs --device cpu and --threads 1 (got {device.type}, {threads} threads): "
            "it counts CPU time, which is wall time only for one thread"
        )
    return CLOCKS[name]


@dataclass(frozen=True)
class TimingPolicy:
    """How hard to time one call: ``warmup`` untimed calls, then at least ``min_repeats`` timed ones and
    more until ``budget_s`` of timed calls have run (at most ``max_repeats``).

    ``rounds`` > 1 splits the repeats of every call into that many visits, the calls taking turns
    between visits (see ``run_benches``): a shared machine's slow spells last seconds, and a call timed
    in one block would carry a whole spell while its neighbours escape it.
    """

    warmup: int = 2
    min_repeats: int = 5
    max_repeats: int = 50
    budget_s: float = 0.25
    clock: str = "wall"
    rounds: int = 1

    def __post_init__(self) -> None:
        if (self.warmup < 0 or self.min_repeats < 1 or self.max_repeats < self.min_repeats or self.budget_s < 0
                or self.rounds < 1):
            raise ValueError(
                f"invalid timing policy {self!r}: need warmup >= 0, 1 <= min_repeats <= max_repeats, rounds >= 1"
            )

    def visit(self, index: int) -> TimingPolicy:
        """The policy of visit ``index`` of ``rounds``: its share of the repeats; warm-up on the first only."""
        share = self.rounds
        return dataclasses.replace(
            self,
            warmup=self.warmup if index == 0 else 0,
            min_repeats=-(-self.min_repeats // share),
            max_repeats=-(-self.max_repeats // share),
            budget_s=self.budget_s / share,
            rounds=1,
        )


FULL = TimingPolicy(budget_s=0.1, min_repeats=6, rounds=3)
QUICK = TimingPolicy(warmup=1, min_repeats=3, max_repeats=5, budget_s=0.01)


def sample_times_s(fn: Callable[[], object], device: torch.device, policy: TimingPolicy = FULL) -> list[float]:
    """Times of ``fn()`` in seconds under ``policy`` (on its clock), after its warm-up calls."""
    now = CLOCKS[policy.clock]
    for _ in range(policy.warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    spent = 0.0
    while len(times) < policy.min_repeats or (spent < policy.budget_s and len(times) < policy.max_repeats):
        start = now()
        fn()
        synchronize(device)
        elapsed = now() - start
        times.append(elapsed)
        spent += elapsed
    return times


__all__ = ["CLOCKS", "FULL", "QUICK", "TimingPolicy", "clock", "sample_times_s"]
