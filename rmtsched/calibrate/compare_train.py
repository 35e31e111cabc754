"""Predicted versus measured for training: one training step under each training schedule, on the PyTorch
backend and in the simulator.

Each schedule's step (``train_gradients``: the loss and every gradient) is timed by
``rmtsched.backends.torch.timing.time_calls`` (median of R runs, interleaved run by run, validation outside
the timing) after one untimed run that warms up and measures the peak of the activation bytes held for the
backward (``calibrate/train_memory.py`` says what is counted and why). The simulator
(``sim.train.simulate_train`` on the given ``HardwareSpec``) predicts the same two numbers: the step's
makespan and its ``peak_activation_bytes``. ``rmtsched compare --train`` and ``bench/bench_train.py`` print it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from tqdm import tqdm

from rmtsched.backends.torch import build_model, train_gradients
from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.timing import time_calls
from rmtsched.calibrate.compare import ComparedRows, PredictedVsMeasured, rel_error, sequential_first
from rmtsched.calibrate.device import Target, using_threads
from rmtsched.calibrate.timing import clock
from rmtsched.calibrate.train_memory import measure_train_memory
from rmtsched.errors import ScheduleError, SpecError
from rmtsched.sched import (
    TrainGraph,
    TrainSchedule,
    available_train_schedulers,
    graph_for_tokens,
    make_train_schedule,
    validate_train,
)
from rmtsched.sim import CostModel, workload_from_spec
from rmtsched.sim.train import BACKWARD_FACTOR, simulate_train
from rmtsched.sim.workload import with_batch
from rmtsched.specs.guard import BACKEND_BYTES, Estimate, check_fits
from rmtsched.specs.hardware import HardwareSpec
from rmtsched.specs.model import ModelSpec

MEMORY_CAPPED = "checkpointed"  # the training scheduler the memory budget is for


def default_memory_budget(num_layers: int) -> int:
    """The budget compared when none is given: two layers' worth of cells (a few of the S x L held uncapped)."""
    return 2 * num_layers


@dataclass(frozen=True)
class TrainScheduleComparison(PredictedVsMeasured):
    """One training schedule: predicted and measured step time, predicted and measured peak activation bytes."""

    schedule: str
    steps: int
    recomputed_cells: int
    predicted_s: float
    measured_runs_s: tuple[float, ...]
    predicted_peak_activation_bytes: float
    measured_peak_activation_bytes: int

    @property
    def memory_rel_error(self) -> float | None:
        """``predicted / measured - 1`` of the peak activation bytes: positive when the simulator is pessimistic."""
        return rel_error(self.predicted_peak_activation_bytes, self.measured_peak_activation_bytes)


@dataclass(frozen=True)
class TrainComparison(ComparedRows):
    """Every training schedule of one model on one batch of ``seq_len`` tokens, and where it ran."""

    spec: ModelSpec
    hardware: HardwareSpec
    seq_len: int
    batch_size: int
    graph: TrainGraph
    target: Target
    memory_budget: int | None
    backward_factor: float
    rows: tuple[TrainScheduleComparison, ...]

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready record per schedule."""
        forward = self.graph.forward
        records = []
        for row in self.rows:
            predicted_speedup, measured_speedup = self.speedups(row)
            records.append({
                "schedule": row.schedule, "train": True, "model": self.spec.name, "hardware": self.hardware.name,
                "device": self.target.device.type, "dtype": self.target.dtype_name, "threads": self.target.threads,
                "seq_len": self.seq_len, "segment_len": self.spec.segment_len, "batch_size": self.batch_size,
                "layers": forward.num_layers, "segments": forward.num_segments, "cells": forward.num_cells,
                "truncation": self.graph.truncation,
                "memory_budget": self.memory_budget if row.schedule == MEMORY_CAPPED else None,
                "backward_factor": self.backward_factor, "steps": row.steps, "recomputed_cells": row.recomputed_cells,
                "predicted_s": row.predicted_s, "measured_s": row.measured_s,
                "measured_runs_s": list(row.measured_runs_s), "rel_error": row.rel_error,
                "predicted_speedup_vs_sequential": predicted_speedup,
                "measured_speedup_vs_sequential": measured_speedup,
                "speedup_rel_error": rel_error(predicted_speedup, measured_speedup),
                "predicted_peak_activation_bytes": row.predicted_peak_activation_bytes,
                "measured_peak_activation_bytes": row.measured_peak_activation_bytes,
                "memory_rel_error": row.memory_rel_error,
            })
        return records


def train_batch(
    spec: ModelSpec, seq_len: int, batch_size: int, seed: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The compared batch: seeded random token ids ``[batch_size, seq_len]`` and their next-token targets (the
    ids shifted left by one, wrapping)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, spec.vocab_size, (batch_size, seq_len), generator=generator).to(device)
    return inputs, torch.roll(inputs, -1, dims=1)


def single_device_train_schedulers() -> list[str]:
    """Registered training schedulers, sequential first."""
    return sequential_first(available_train_schedulers())


def train_schedules(
    graph: TrainGraph, names: Sequence[str] | None, *, memory_budget: int | None = None,
    max_width: int | None = None,
) -> dict[str, TrainSchedule]:
    """One-device training schedules of ``names`` (default: every registered scheduler that can make one);
    ``memory_budget`` (default ``default_memory_budget``) goes to the memory-capped one."""
    budget = default_memory_budget(graph.num_layers) if memory_budget is None else memory_budget
    if memory_budget is not None and names and MEMORY_CAPPED not in names:
        raise ScheduleError(f"a memory budget ({memory_budget} cells) is for {MEMORY_CAPPED!r}, which is not "
                            f"among the schedules compared ({', '.join(names)})")
    schedules = {}
    for name in names or single_device_train_schedulers():
        try:
            schedules[name] = make_train_schedule(graph, name, max_width=max_width, num_devices=1,
                                                  memory_budget=budget if name == MEMORY_CAPPED else None)
        except ScheduleError as exc:
            if names:
                raise ScheduleError(f"training scheduler {name!r} cannot run here: {exc}") from exc
    if not schedules:
        raise ScheduleError("no registered training scheduler can run this model on one device")
    return schedules


def compare_train(
    spec: ModelSpec,
    hardware: HardwareSpec,
    seq_len: int,
    target: Target,
    *,
    schedules: Sequence[str] | None = None,
    batch_size: int = 1,
    truncation: int | None = None,
    memory_budget: int | None = None,
    max_width: int | None = None,
    repeat: int = 3,
    seed: int = 0,
    progress: bool = True,
    clock_name: str = "wall",
    matmul: str = "auto",
    backward_factor: float = BACKWARD_FACTOR,
    guard: bool = False,
) -> TrainComparison:
    """Time, measure and simulate one training step of ``spec`` over ``batch_size`` sequences of ``seq_len``
    seeded random tokens (next-token targets) under ``schedules`` (default: every registered training
    scheduler that runs on one device; ``memory_budget`` cells, default two per layer, for 'checkpointed').

    ``truncation`` k back-propagates through the last k segments only; ``clock_name`` "process" times CPU
    time (one thread on a shared machine). Speedups are over 'sequential' when it is compared. ``guard``
    refuses (``RequestTooLarge``, before the model is built) a step whose predicted peak memory, the busiest
    schedule's, does not fit in this machine's available memory (or whose predicted runs take over a week).
    """
    now = clock(clock_name, target.device, target.threads)
    if repeat <= 0 or batch_size <= 0:
        raise SpecError(f"repeat and batch_size must be positive integers, got {repeat!r} and {batch_size!r}")
    if spec.dtype_bytes != target.dtype_bytes:
        spec = spec.replace(dtype_bytes=target.dtype_bytes)  # cost the model in the dtype it runs in
    graph = TrainGraph(graph_for_tokens(spec, seq_len), truncation)
    plans = train_schedules(graph, schedules, memory_budget=memory_budget, max_width=max_width)
    for schedule in plans.values():
        validate_train(schedule, graph)
    cost = CostModel(with_batch(workload_from_spec(spec), batch_size), hardware)
    predicted = {name: simulate_train(schedule, graph, cost, backward_factor=backward_factor, check=False)
                 for name, schedule in plans.items()}
    if guard:
        need = BACKEND_BYTES + max(result.peak_memory_bytes for result in predicted.values())
        what = f"a training step of {spec.name} on {batch_size} x {seq_len:,} tokens (predicted peak memory)"
        seconds = (repeat + 1) * sum(result.makespan_s for result in predicted.values())
        check_fits(Estimate(what, graph.forward.num_cells, need, seconds))

    model = build_model(spec, seed=seed, dtype=target.dtype, device=target.device, matmul=matmul)
    inputs, targets = train_batch(spec, seq_len, batch_size, seed, target.device)
    with (
        using_threads(target),
        tqdm(total=len(plans) * (repeat + 1), desc="compare --train", unit="step", disable=not progress,
             leave=False) as bar,
    ):
        peaks = {}
        for name, schedule in plans.items():  # untimed: warms up and counts held bytes
            peaks[name] = measure_train_memory(model, inputs, targets, graph, schedule).peak_bytes
            bar.update()
        calls = {name: partial(_train_step, model, inputs, targets, schedule, truncation) for name, schedule in
                 plans.items()}
        timings = time_calls(calls, repeat=repeat, device=target.device, clock=now, after_each=bar.update)
    rows = tuple(
        TrainScheduleComparison(name, schedule.num_steps, len(schedule.recomputed), predicted[name].makespan_s,
                                timings[name].runs_s, predicted[name].peak_activation_bytes, peaks[name])
        for name, schedule in plans.items()
    )
    budget = plans[MEMORY_CAPPED].options["memory_budget"] if MEMORY_CAPPED in plans else None
    return TrainComparison(spec, hardware, seq_len, batch_size, graph, target, budget, backward_factor, rows)


def _train_step(
    model: StackedModel, inputs: torch.Tensor, targets: torch.Tensor, schedule: TrainSchedule, truncation: int | None,
    _index: int,
) -> None:
    train_gradients(model, inputs, targets, schedule, truncation=truncation, validate=False)


__all__ = [
    "MEMORY_CAPPED",
    "TrainComparison",
    "TrainScheduleComparison",
    "compare_train",
    "default_memory_budget",
    "single_device_train_schedulers",
    "train_batch",
    "train_schedules",
]
