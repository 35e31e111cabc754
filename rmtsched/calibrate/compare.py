"""Predicted versus measured: run schedules on the PyTorch backend and through the simulator.

For one model and sequence length, every schedule is timed on the real backend by
``rmtsched.backends.torch.timing.time_schedule`` (median of R runs, schedules interleaved run by run so
drift in the machine's load hits them alike, validation outside the timing) and simulated with the
event engine on the given ``HardwareSpec``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from rmtsched.backends.torch import build_model
from rmtsched.backends.torch.timing import time_schedule
from rmtsched.calibrate.device import Target, using_threads
from rmtsched.calibrate.timing import clock
from rmtsched.errors import ScheduleError, SpecError
from rmtsched.sched import CellGraph, Schedule, available_schedulers, graph_for_tokens, make_schedule
from rmtsched.sim import CostModel, simulate, workload_from_spec
from rmtsched.specs.hardware import HardwareSpec
from rmtsched.specs.model import ModelSpec

BASELINE = "sequential"


class PredictedVsMeasured:
    """A predicted time against measured runs: the median run and the relative error (mixin)."""

    predicted_s: float
    measured_runs_s: tuple[float, ...]

    @property
    def measured_s(self) -> float:
        return statistics.median(self.measured_runs_s)

    @property
    def rel_error(self) -> float:
        """``predicted / measured - 1``: positive when the simulator is pessimistic."""
        return self.predicted_s / self.measured_s - 1.0


@dataclass(frozen=True)
class ScheduleComparison(PredictedVsMeasured):
    """One schedule: the simulator's makespan and the backend's measured wall times."""

    schedule: str
    steps: int
    predicted_s: float
    measured_runs_s: tuple[float, ...]


@dataclass(frozen=True)
class Comparison:
    """Every schedule of one model on one sequence length, and where it ran."""

    spec: ModelSpec
    hardware: HardwareSpec
    seq_len: int
    graph: CellGraph
    target: Target
    rows: tuple[ScheduleComparison, ...]

    def row(self, schedule: str) -> ScheduleComparison | None:
        return next((row for row in self.rows if row.schedule == schedule), None)

    def speedups(self, row: ScheduleComparison) -> tuple[float | None, float | None]:
        """(predicted, measured) speedup of ``row`` over the sequential schedule (None without one)."""
        base = self.row(BASELINE)
        if base is None:
            return None, None
        return base.predicted_s / row.predicted_s, base.measured_s / row.measured_s

    @property
    def median_abs_rel_error(self) -> float:
        return statistics.median(abs(row.rel_error) for row in self.rows)

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready record per schedule."""
        records = []
        for row in self.rows:
            predicted_speedup, measured_speedup = self.speedups(row)
            records.append({
                "schedule": row.schedule,
                "model": self.spec.name,
                "hardware": self.hardware.name,
                "device": self.target.device.type,
                "dtype": self.target.dtype_name,
                "threads": self.target.threads,
                "seq_len": self.seq_len,
                "segment_len": self.spec.segment_len,
                "layers": self.graph.num_layers,
                "segments": self.graph.num_segments,
                "cells": self.graph.num_cells,
                "steps": row.steps,
                "predicted_s": row.predicted_s,
                "measured_s": row.measured_s,
                "measured_runs_s": list(row.measured_runs_s),
                "rel_error": row.rel_error,
                "predicted_speedup_vs_sequential": predicted_speedup,
                "measured_speedup_vs_sequential": measured_speedup,
                "speedup_rel_error": (
                    predicted_speedup / measured_speedup - 1.0 if predicted_speedup and measured_speedup else None
                ),
            })
        return records


def single_device_schedulers() -> list[str]:
    """Registered schedulers, sequential first (the baseline of every speedup)."""
    names = available_schedulers()
    return [BASELINE, *(name for name in names if name != BASELINE)] if BASELINE in names else names


def _schedules(
    graph: CellGraph, names: Sequence[str] | None, max_width: int | None
) -> dict[str, Schedule]:
    """One-device schedules of ``names``; by default every registered scheduler that can make one."""
    schedules = {}
    for name in names or single_device_schedulers():
        try:
            schedules[name] = make_schedule(graph, name, max_width=max_width, num_devices=1)
        except ScheduleError as exc:
            if names:
                raise ScheduleError(f"scheduler {name!r} cannot run on one device: {exc}") from exc
    if not schedules:
        raise ScheduleError("no registered scheduler can run this model on one device")
    return schedules


def compare(
    spec: ModelSpec,
    hardware: HardwareSpec,
    seq_len: int,
    target: Target,
    *,
    schedules: Sequence[str] | None = None,
    repeat: int = 3,
    max_width: int | None = None,
    seed: int = 0,
    progress: bool = True,
    clock_name: str = "wall",
    matmul: str = "auto",
) -> Comparison:
    """Time and simulate ``schedules`` (default: every registered one) of ``spec`` on ``seq_len`` tokens.

    ``clock_name`` "process" times CPU time instead of wall time (one thread on a shared machine).
    """
    now = clock(clock_name, target.device, target.threads)
    if repeat <= 0:
        raise SpecError(f"repeat must be a positive integer, got {repeat!r}")
    if spec.dtype_bytes != target.dtype_bytes:
        spec = spec.replace(dtype_bytes=target.dtype_bytes)  # cost the model in the dtype it runs in
    graph = graph_for_tokens(spec, seq_len)
    plans = _schedules(graph, schedules, max_width)
    cost = CostModel(workload_from_spec(spec), hardware)
    predicted = {name: simulate(schedule, graph, cost).makespan_s for name, schedule in plans.items()}

    model = build_model(spec, seed=seed, dtype=target.dtype, device=target.device, matmul=matmul)
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, spec.vocab_size, (1, seq_len), generator=generator).to(target.device)
    with (
        using_threads(target),
        tqdm(total=len(plans) * repeat, desc=f"compare {spec.name}", unit="run", disable=not progress,
             leave=False) as bar,
    ):
        timings = time_schedule(model, inputs, plans, repeat=repeat, clock=now, after_each=bar.update)
    rows = tuple(
        ScheduleComparison(name, plans[name].num_steps, predicted[name], timings[name].runs_s) for name in plans
    )
    return Comparison(spec, hardware, seq_len, graph, target, rows)


__all__ = ["BASELINE", "Comparison", "PredictedVsMeasured", "ScheduleComparison", "compare", "single_device_schedulers"]
