"""Wall-clock timing of backend calls: warm up, repeat within a time budget, report the median.

CUDA work is asynchronous, so every timed call is bracketed by ``torch.cuda.synchronize``; on the CPU the
synchronisation is a no-op. Medians, not minima: ``rmtsched compare`` reports medians of whole runs, and
a calibration fitted to best cases would under-predict them systematically. The ``process`` clock (CPU
time of this process) makes single-threaded CPU timings robust to other work on a shared machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

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


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (CUDA); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class TimingPolicy:
    """How hard to time one call: ``warmup`` untimed calls, then at least ``min_repeats`` timed ones and
    more until ``budget_s`` of timed calls have run (at most ``max_repeats``)."""

    warmup: int = 2
    min_repeats: int = 5
    max_repeats: int = 50
    budget_s: float = 0.25
    clock: str = "wall"

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.min_repeats < 1 or self.max_repeats < self.min_repeats or self.budget_s < 0:
            raise ValueError(f"invalid timing policy {self!r}: need warmup >= 0, 1 <= min_repeats <= max_repeats")


FULL = TimingPolicy(budget_s=0.1)
QUICK = TimingPolicy(warmup=1, min_repeats=3, max_repeats=5, budget_s=0.01)


def median_time_s(fn: Callable[[], object], device: torch.device, policy: TimingPolicy = FULL) -> float:
    """Median time of ``fn()`` in seconds under ``policy`` (on its clock)."""
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
    return statistics.median(times)


__all__ = ["CLOCKS", "FULL", "QUICK", "TimingPolicy", "clock", "median_time_s", "synchronize"]
