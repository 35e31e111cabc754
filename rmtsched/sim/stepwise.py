"""Step by step, predicted against measured: where a schedule's prediction goes wrong, by step width.

A run's makespan error can hide opposite errors in narrow and wide steps (the H200 session over-predicted
wide diagonal steps while one-cell steps were close). ``compare_steps`` lines up the simulator's step
durations with a real run's (``sim.trace.StepRecorder``) and summarises them per width: the median
durations and the median and worst relative error.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from rmtsched.errors import RmtschedError
from rmtsched.sim.result import Timeline


@dataclass(frozen=True)
class WidthComparison:
    """Steps of one width: how many, their median durations, and the relative errors predicted / measured - 1."""

    width: int
    steps: int
    predicted_median_s: float
    measured_median_s: float
    median_error: float
    worst_error: float


def compare_steps(
    predicted: Timeline, measured_start_s: Sequence[float], measured_end_s: Sequence[float]
) -> list[WidthComparison]:
    """Per step width (ascending), the simulated against the measured step durations of the same schedule."""
    steps = predicted.schedule.steps
    if not len(measured_start_s) == len(measured_end_s) == len(steps):
        raise RmtschedError(
            f"{len(measured_start_s)} measured starts and {len(measured_end_s)} ends for a schedule of "
            f"{len(steps)} steps: the measurement is of another schedule"
        )
    by_width: dict[int, list[tuple[float, float]]] = {}
    for index, step in enumerate(steps):
        simulated = float(predicted.step_end_s[index] - predicted.step_start_s[index])
        measured = float(measured_end_s[index]) - float(measured_start_s[index])
        if measured <= 0:
            raise RmtschedError(f"step {index} measured {measured!r} s: expected a positive duration")
        by_width.setdefault(step.width, []).append((simulated, measured))
    rows = []
    for width, pairs in sorted(by_width.items()):
        errors = [simulated / measured - 1.0 for simulated, measured in pairs]
        rows.append(WidthComparison(
            width=width,
            steps=len(pairs),
            predicted_median_s=statistics.median(s for s, _ in pairs),
            measured_median_s=statistics.median(m for _, m in pairs),
            median_error=statistics.median(errors),
            worst_error=max(errors, key=abs),
        ))
    return rows


__all__ = ["WidthComparison", "compare_steps"]
