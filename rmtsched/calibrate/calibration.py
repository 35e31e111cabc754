"""``calibrate``: run the microbenchmarks, fit the simulator's ``HardwareSpec`` stage by stage.

The stages are in ``plan.py``. Start values come from the measurements themselves (the best observed GEMM
and vector rates, the dispatch time, the streaming bandwidth), so each least-squares search starts near its
answer. The fitted rates are effective ones: the spec's efficiencies are set to 1 and the rates carry them.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rmtsched.calibrate.device import Target, describe_host, device_memory_bytes
from rmtsched.calibrate.fit import relative_errors
from rmtsched.calibrate.measurement import Measurement
from rmtsched.calibrate.microbench import Grid, benches, default_grid
from rmtsched.calibrate.plan import DEFAULT_PLAN, PerKernelStage, Stage, StageReport, explained, fit_plan
from rmtsched.calibrate.run import run_benches
from rmtsched.calibrate.timing import FULL, QUICK, TimingPolicy, clock
from rmtsched.specs.hardware import CPU_GENERIC, HardwareSpec


@dataclass(frozen=True)
class Calibration:
    """The fitted spec, the stages that made it, and every measurement behind it."""

    hardware: HardwareSpec
    stages: tuple[StageReport, ...]
    measurements: tuple[Measurement, ...]
    elapsed_s: float
    host: str
    extra: dict[str, Any] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        """JSON-ready: the spec, per-stage fits, and each measurement with the final prediction."""
        errors = relative_errors(self.hardware, self.measurements)
        return {
            "hardware": self.hardware.to_dict(),
            "host": self.host,
            "elapsed_s": self.elapsed_s,
            "stages": [vars(stage) | {"free": list(stage.free)} for stage in self.stages],
            "median_abs_rel_error_by_group": explained(self.hardware, self.measurements),
            "measurements": [
                m.to_dict() | {"predicted_s": m.measured_s * (1 + e), "rel_error": e}
                for m, e in zip(self.measurements, errors, strict=True)
            ],
            **self.extra,
        }


def start_spec(measurements: Sequence[Measurement], target: Target, name: str) -> HardwareSpec:
    """A spec whose rates are the best ones observed, so the fit starts close (efficiencies fixed at 1)."""
    def best_rate(kernel_filter, amount) -> float | None:
        rates = [
            amount(m) * m.cells / m.measured_s
            for m in measurements
            if all(kernel_filter(k) for k in m.kernels) and amount(m) > 0
        ]
        return max(rates) if rates else None

    def flops(m: Measurement) -> float:
        return sum(k.flops for k in m.kernels)

    def moved(m: Measurement) -> float:
        return sum(k.activation_bytes + k.weight_bytes for k in m.kernels)

    matmul = best_rate(lambda k: k.matmul, flops) or 1e11
    vector = best_rate(lambda k: not k.matmul, flops) or matmul / 10
    stream = [m for m in measurements if m.group == "stream"]
    bandwidth = max((moved(m) / m.measured_s for m in stream), default=2e10)
    dispatch = [m.measured_s for m in measurements if m.name == "dispatch"]
    launch = statistics.median(dispatch) if dispatch else 1e-5
    return HardwareSpec(
        name=name,
        matmul_flops_per_s={target.dtype_name: matmul},
        vector_flops_per_s=vector,
        memory_bandwidth_bytes_per_s=bandwidth,
        memory_bytes=device_memory_bytes(target),
        launch_overhead_s=launch,
        num_devices=_num_devices(target),
        link_bandwidth_bytes_per_s=CPU_GENERIC.link_bandwidth_bytes_per_s,
        link_latency_s=CPU_GENERIC.link_latency_s,
        matmul_efficiency=1.0,
        matmul_half_flops=matmul * launch,
        vector_efficiency=1.0,
        memory_efficiency=1.0,
        memory_half_bytes=0.0,
        cell_overhead_s=launch,
    )


def _num_devices(target: Target) -> int:
    if target.device.type == "cuda":
        import torch

        return max(1, torch.cuda.device_count())
    return max(1, (os.cpu_count() or 1) // target.threads)


def calibrate(
    target: Target,
    *,
    quick: bool = False,
    name: str | None = None,
    grid: Grid | None = None,
    policy: TimingPolicy | None = None,
    plan: Sequence[Stage | PerKernelStage] = DEFAULT_PLAN,
    progress: bool = True,
    clock_name: str = "wall",
) -> Calibration:
    """Measure the backend on ``target`` and fit a ``HardwareSpec`` (``quick``: a few seconds, coarse).

    ``clock_name`` "process" times CPU time instead of wall time (one thread on a shared machine).
    """
    clock(clock_name, target.device, target.threads)  # reject a clock that cannot time this target
    started = time.perf_counter()
    grid = grid or default_grid(target.device.type, quick)
    policy = dataclasses.replace(policy or (QUICK if quick else FULL), clock=clock_name)
    load_before = _load()
    name = name or f"calibrated-{target.device.type}-{target.dtype_name}"
    measurements = run_benches(benches(grid, target), target, policy, progress=progress)
    start = start_spec(measurements, target, name)
    hardware, stages = fit_plan(measurements, start, plan)
    host = describe_host(target)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    by_group = explained(hardware, measurements)
    summary = "; ".join(f"{group}: median |err| {100 * error:.1f}%" for group, error in sorted(by_group.items()))
    notes = (
        f"Fitted by `rmtsched calibrate{' --quick' if quick else ''}` on {host}, {target.dtype_name}, {stamp}. "
        f"Rates are effective (efficiencies 1). {summary}. Link figures are cpu-generic's assumptions, "
        "not measured."
    )
    hardware = hardware.replace(notes=notes)
    extra = {"clock": clock_name, "load_average_before": load_before, "load_average_after": _load()}
    return Calibration(hardware, stages, tuple(measurements), time.perf_counter() - started, host, extra)


def _load() -> float | None:
    """The 1-minute load average (timings taken while other work runs are inflated)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


__all__ = ["Calibration", "calibrate", "start_spec"]
