"""Predicted versus measured for the pipelined schedule on P processes (the distributed backend).

The simulator's pipelined run gives a makespan and each device's busy time; ``run_pipelined`` gives the
measured makespan and each rank's busy time (its steps' compute, without waiting for transfers). Each
process runs ``threads // P`` intra-op threads, so the spec should come from a calibration with that
thread count (``rmtsched calibrate --threads``); its link figures are assumptions unless measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from rmtsched.backends.torch import build_model
from rmtsched.calibrate.compare import PredictedVsMeasured
from rmtsched.calibrate.device import Target
from rmtsched.errors import SpecError
from rmtsched.sched import graph_for_tokens, make_schedule
from rmtsched.sim import CostModel, simulate, workload_from_spec
from rmtsched.specs.hardware import HardwareSpec
from rmtsched.specs.model import ModelSpec


@dataclass(frozen=True)
class RankComparison:
    """One rank (device): its layers and its predicted and measured busy time."""

    rank: int
    layers: tuple[int, int]
    predicted_busy_s: float
    measured_busy_s: float

    @property
    def rel_error(self) -> float:
        return self.predicted_busy_s / self.measured_busy_s - 1.0


@dataclass(frozen=True)
class PipelineComparison(PredictedVsMeasured):
    """The pipelined schedule on ``devices`` processes: makespans and per-rank busy times."""

    devices: int
    threads_per_device: int
    predicted_s: float
    measured_runs_s: tuple[float, ...]
    ranks: tuple[RankComparison, ...]

    def record(self) -> dict[str, Any]:
        return {
            "schedule": "pipelined",
            "devices": self.devices,
            "threads_per_device": self.threads_per_device,
            "predicted_s": self.predicted_s,
            "measured_s": self.measured_s,
            "measured_runs_s": list(self.measured_runs_s),
            "rel_error": self.rel_error,
            "ranks": [
                {"rank": r.rank, "layers": list(r.layers), "predicted_busy_s": r.predicted_busy_s,
                 "measured_busy_s": r.measured_busy_s, "rel_error": r.rel_error}
                for r in self.ranks
            ],
        }


def check_pipeline_devices(hardware: HardwareSpec, devices: int) -> None:
    """Fail before anything runs if ``hardware`` cannot hold a ``devices``-stage pipeline.

    A CPU spec calibrated with T threads counts cores // T devices: one process per device then runs
    with T threads, so the spec for a P-process run is the one calibrated at cores // P threads.
    """
    if devices < 2:
        raise SpecError(f"a pipelined comparison needs at least 2 devices, got {devices}")
    if devices > hardware.num_devices:
        raise SpecError(
            f"hardware {hardware.name!r} has {hardware.num_devices} devices, asked for {devices} "
            "(a CPU spec has cores // threads devices: calibrate with --threads cores // P for P processes)"
        )


def compare_pipelined(
    spec: ModelSpec,
    hardware: HardwareSpec,
    seq_len: int,
    target: Target,
    devices: int,
    *,
    repeat: int = 3,
    seed: int = 0,
) -> PipelineComparison:
    """Run the pipelined schedule on ``devices`` local processes and simulate it on ``hardware``."""
    from rmtsched.backends.distributed import run_pipelined  # optional layer: imported only when asked for

    check_pipeline_devices(hardware, devices)
    graph = graph_for_tokens(spec, seq_len)
    schedule = make_schedule(graph, "pipelined", num_devices=devices)
    predicted = simulate(schedule, graph, CostModel(workload_from_spec(spec), hardware))
    threads = max(1, target.threads // devices)
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, spec.vocab_size, (1, seq_len), generator=generator)
    factory = partial(build_model, spec, seed=seed, dtype=target.dtype)
    measured = run_pipelined(factory, inputs, num_procs=devices, layout=spec, schedule="pipelined",
                             device=target.device.type, threads_per_proc=threads, repeat=repeat)
    ranks = tuple(
        RankComparison(rank.rank, tuple(rank.layers), predicted.busy_s[rank.rank], rank.busy_s)
        for rank in sorted(measured.ranks, key=lambda r: r.rank)
    )
    return PipelineComparison(devices, threads, predicted.makespan_s, tuple(measured.wall_s_runs), ranks)


__all__ = ["PipelineComparison", "RankComparison", "compare_pipelined"]
