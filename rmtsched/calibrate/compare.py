"""Predicted versus measured: run schedules and the full-attention baseline on the PyTorch backend and
through the simulator.

For one model and sequence length, every schedule and the baseline are timed on the real backend by
``rmtsched.backends.torch.timing.time_calls`` (median of R runs, interleaved run by run so drift in the
machine's load hits them alike, validation outside the timing) and simulated on the given
``HardwareSpec`` (schedules with the event engine, the baseline as ``sim.study.full_attention`` costs it).
One more run of each schedule is timed step by step (``calibrate/steps.py``) and set against the
simulator's steps per step width (``sim.stepwise.compare_steps``); both traces can be written side by side.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rmtsched.backends.torch import build_model
from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.timing import Clock, Timing, full_attention_call, schedule_calls, time_calls
from rmtsched.calibrate.device import Target, using_threads
from rmtsched.calibrate.steps import record_steps, trace_paths, write_traces
from rmtsched.calibrate.timing import clock
from rmtsched.errors import ScheduleError, SpecError
from rmtsched.sched import CellGraph, Schedule, available_schedulers, graph_for_tokens, make_schedule
from rmtsched.sim import CostModel, SimResult, simulate, workload_from_spec
from rmtsched.sim.stepwise import WidthComparison, compare_steps
from rmtsched.sim.study import FULL_ATTENTION, full_attention
from rmtsched.sim.trace import StepRecorder
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
    """One schedule (or the full-attention baseline): the simulator's makespan, the backend's measured wall
    times, and (schedules) the per-step comparison by step width."""

    schedule: str
    steps: int
    predicted_s: float
    measured_runs_s: tuple[float, ...]
    by_width: tuple[WidthComparison, ...] = ()


class ComparedRows:
    """Rows of predicted against measured times, one per schedule: look-up by name, speedups (mixin)."""

    rows: tuple[Any, ...]  # each a PredictedVsMeasured with a ``schedule`` name

    def row(self, schedule: str) -> Any:
        return next((row for row in self.rows if row.schedule == schedule), None)

    def speedups(self, row: PredictedVsMeasured, baseline: str = BASELINE) -> tuple[float | None, float | None]:
        """(predicted, measured) speedup of ``row`` over ``baseline`` (sequential, or full attention; None
        without one)."""
        base = self.row(baseline)
        if base is None:
            return None, None
        return base.predicted_s / row.predicted_s, base.measured_s / row.measured_s

    @property
    def median_abs_rel_error(self) -> float:
        return statistics.median(abs(row.rel_error) for row in self.rows)


@dataclass(frozen=True)
class Comparison(ComparedRows):
    """Every schedule of one model on one sequence length, and where it ran."""

    spec: ModelSpec
    hardware: HardwareSpec
    seq_len: int
    graph: CellGraph
    target: Target
    rows: tuple[ScheduleComparison, ...]
    trace_dir: Path | None = None

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready record per schedule."""
        records = []
        for row in self.rows:
            predicted_speedup, measured_speedup = self.speedups(row)
            predicted_vs_full, measured_vs_full = self.speedups(row, FULL_ATTENTION)
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
                "speedup_rel_error": rel_error(predicted_speedup, measured_speedup),
                "predicted_speedup_vs_full_attention": predicted_vs_full,
                "measured_speedup_vs_full_attention": measured_vs_full,
                "speedup_vs_full_attention_rel_error": rel_error(predicted_vs_full, measured_vs_full),
                "steps_by_width": [dataclasses.asdict(width) for width in row.by_width],
                "trace_dir": None if self.trace_dir is None else str(self.trace_dir),
            })
        return records


def rel_error(predicted: float | None, measured: float | None) -> float | None:
    """``predicted / measured - 1``, or None when either is missing (or zero)."""
    return predicted / measured - 1.0 if predicted and measured else None


def sequential_first(names: list[str]) -> list[str]:
    """``names`` with the baseline of every speedup, sequential, moved first (when it is there)."""
    return [BASELINE, *(name for name in names if name != BASELINE)] if BASELINE in names else names


def single_device_schedulers() -> list[str]:
    """Registered schedulers, sequential first."""
    return sequential_first(available_schedulers())


def _schedules(
    graph: CellGraph, names: Sequence[str] | None, max_width: int | None
) -> dict[str, Schedule]:
    """One-device schedules of ``names`` (the baseline's name left out); by default every registered
    scheduler that can make one."""
    schedules = {}
    for name in names or single_device_schedulers():
        if name == FULL_ATTENTION:
            continue
        try:
            schedules[name] = make_schedule(graph, name, max_width=max_width, num_devices=1)
        except ScheduleError as exc:
            if names:
                raise ScheduleError(f"scheduler {name!r} cannot run on one device: {exc}") from exc
    if not schedules and FULL_ATTENTION not in (names or ()):
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
    full_attention_baseline: bool = False,
    chunk_tokens: int | None = None,
    trace_dir: Path | str | None = None,
) -> Comparison:
    """Time and simulate ``schedules`` (default: every registered one) of ``spec`` on ``seq_len`` tokens, and
    the full-attention baseline (chunked by ``chunk_tokens``) when ``full_attention_baseline`` or when
    ``schedules`` names it; ``trace_dir`` receives each schedule's measured and simulated Chrome traces
    (every path checked before anything runs).

    ``clock_name`` "process" times CPU time instead of wall time (one thread on a shared machine).
    """
    now = clock(clock_name, target.device, target.threads)
    if repeat <= 0:
        raise SpecError(f"repeat must be a positive integer, got {repeat!r}")
    if spec.dtype_bytes != target.dtype_bytes:
        spec = spec.replace(dtype_bytes=target.dtype_bytes)  # cost the model in the dtype it runs in
    graph = graph_for_tokens(spec, seq_len)
    plans = _schedules(graph, schedules, max_width)
    with_baseline = full_attention_baseline or FULL_ATTENTION in (schedules or ())
    paths = trace_paths(trace_dir, list(plans)) if trace_dir is not None else {}
    cost = CostModel(workload_from_spec(spec), hardware)
    simulated: dict[str, SimResult] = {name: simulate(schedule, graph, cost) for name, schedule in plans.items()}
    predicted = {name: result.makespan_s for name, result in simulated.items()}
    if with_baseline:
        predicted[FULL_ATTENTION] = full_attention(spec, hardware, seq_len).result.makespan_s

    model = build_model(spec, seed=seed, dtype=target.dtype, device=target.device, matmul=matmul)
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, spec.vocab_size, (1, seq_len), generator=generator).to(target.device)
    baseline = {FULL_ATTENTION: chunk_tokens} if with_baseline else {}
    timings, recorders = _measure(model, inputs, plans, baseline, target, repeat=repeat, clock_fn=now,
                                  progress=progress)
    rows = []
    for name in predicted:
        by_width = ()
        if name in plans:
            recorder = recorders[name]
            by_width = tuple(compare_steps(simulated[name].timeline, recorder.start_s, recorder.end_s))
            if name in paths:
                write_traces(paths[name], simulated[name], recorder, f"{spec.name} {name}, {seq_len:,} tokens")
        steps = plans[name].num_steps if name in plans else spec.num_layers  # the baseline: one step per layer
        rows.append(ScheduleComparison(name, steps, predicted[name], timings[name].runs_s, by_width))
    return Comparison(spec, hardware, seq_len, graph, target, tuple(rows),
                      None if trace_dir is None else Path(trace_dir))


def _measure(
    model: StackedModel, inputs: torch.Tensor, plans: dict[str, Schedule], baseline: dict[str, int | None],
    target: Target, *, repeat: int, clock_fn: Clock, progress: bool,
) -> tuple[dict[str, Timing], dict[str, StepRecorder]]:
    """``repeat`` timed runs of every plan and of the baseline (``baseline``: its name -> its chunk, or empty),
    interleaved, then one run of every plan step by step."""
    with (
        using_threads(target),
        tqdm(total=(len(plans) + len(baseline)) * repeat + len(plans), desc="compare", unit="run",
             disable=not progress, leave=False) as bar,
    ):
        calls = schedule_calls(model, inputs, plans)
        for name, chunk_tokens in baseline.items():
            calls[name] = full_attention_call(model, inputs, chunk_tokens=chunk_tokens)
        timings = time_calls(calls, repeat=repeat, device=target.device, clock=clock_fn, after_each=bar.update)
        recorders = {}
        for name, plan in plans.items():
            recorders[name] = record_steps(model, inputs, plan)
            bar.update()
    return timings, recorders


__all__ = [
    "BASELINE",
    "ComparedRows",
    "Comparison",
    "PredictedVsMeasured",
    "ScheduleComparison",
    "compare",
    "rel_error",
    "sequential_first",
    "single_device_schedulers",
]
