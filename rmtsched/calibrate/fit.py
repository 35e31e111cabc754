"""Fit ``HardwareSpec`` fields to measurements: deterministic least squares on log time ratios.

The model function is the simulator's own cost model (``Measurement.predict_s``), so the fit needs no
second copy of the formula. Free fields are positive, so they are fitted as logarithms; the residual of
a measurement is ``log(predicted / measured)`` (relative error, symmetric in over/under-prediction).
Levenberg-Marquardt with a forward-difference Jacobian; a tiny ridge toward the start keeps fields the
data cannot see (e.g. bandwidth when every kernel is compute-bound) where they started. The roofline's
``max`` gives a rate no gradient while its branch is inactive (a too-fast start rate is never corrected),
so the search also restarts with every free rate slowed down, and keeps the best fit.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rmtsched.calibrate.measurement import Measurement
from rmtsched.specs.hardware import DTYPE_BY_BYTES, HardwareSpec

# The field whose value is the measurements' dtype entry of ``matmul_flops_per_s``.
MATMUL_RATE = "matmul_flops_per_s"


@dataclass(frozen=True)
class FitResult:
    """The fitted spec, how well it explains the measurements, and how the search went."""

    hardware: HardwareSpec
    free: tuple[str, ...]
    iterations: int
    rms_log_error: float
    median_abs_rel_error: float
    max_abs_rel_error: float


# Per-kernel tables a fit can set an entry of, as "table[kernel]", and the value an absent entry means.
TABLES = {
    "kernel_efficiency": lambda hardware: 1.0,
    "kernel_launch_overhead_s": lambda hardware: hardware.launch_overhead_s,
}


def table_entry(name: str) -> tuple[str, str] | None:
    """("kernel_efficiency", "attention") for "kernel_efficiency[attention]"; None for a plain field."""
    table, bracket, rest = name.partition("[")
    if not bracket or not rest.endswith("]") or table not in TABLES:
        return None
    return table, rest[:-1]


def get_field(hardware: HardwareSpec, name: str, dtype: str) -> float:
    """A fittable value: a field, the dtype's matmul rate, or a per-kernel table entry ("table[kernel]")."""
    if name == MATMUL_RATE:
        return hardware.matmul_peak_flops_per_s(dtype)
    entry = table_entry(name)
    if entry is not None:
        table, kernel = entry
        return float(getattr(hardware, table).get(kernel, TABLES[table](hardware)))
    return float(getattr(hardware, name))


def with_fields(hardware: HardwareSpec, values: dict[str, float], dtype: str) -> HardwareSpec:
    """``hardware`` with some values replaced (``matmul_flops_per_s`` sets the ``dtype`` entry only,
    "table[kernel]" one entry of a per-kernel table)."""
    changes: dict[str, object] = {}
    for name, value in values.items():
        entry = table_entry(name)
        if name == MATMUL_RATE:
            changes[MATMUL_RATE] = {**hardware.matmul_flops_per_s, dtype: value}
        elif entry is not None:
            table, kernel = entry
            current = changes.get(table, getattr(hardware, table))
            changes[table] = {**current, kernel: value}
        else:
            changes[name] = value
    return hardware.replace(**changes)


def relative_errors(hardware: HardwareSpec, measurements: Sequence[Measurement]) -> list[float]:
    """``predicted / measured - 1`` per measurement."""
    return [m.predict_s(hardware) / m.measured_s - 1.0 for m in measurements]


def fit_hardware(
    measurements: Sequence[Measurement],
    start: HardwareSpec,
    free: Sequence[str],
    *,
    max_iterations: int = 200,
    tolerance: float = 1e-12,
    ridge: float = 1e-8,
    rate_scales: Sequence[float] = (1.0, 0.25),
) -> FitResult:
    """Fit the fields ``free`` of ``start`` to ``measurements`` (all of one dtype) by least squares.

    Minimises ``sum_j log(pred_j / meas_j)^2 + ridge * |theta - theta_0|^2`` over ``theta = log(fields)``,
    from ``start`` with its free rates (``*_per_s`` fields) multiplied by each of ``rate_scales`` in turn.
    """
    if not measurements:
        raise ValueError("cannot fit a hardware spec to no measurements")
    sizes = {m.dtype_bytes for m in measurements}
    if len(sizes) != 1 or next(iter(sizes)) not in DTYPE_BY_BYTES:
        raise ValueError(f"measurements must share one dtype the simulator knows, got element sizes {sorted(sizes)}")
    dtype = DTYPE_BY_BYTES[next(iter(sizes))]
    free = tuple(free)
    start_values = [get_field(start, name, dtype) for name in free]
    for name, value in zip(free, start_values, strict=True):
        if not value > 0 or math.isinf(value):
            raise ValueError(f"free field {name!r} must start positive and finite, got {value!r}")
    theta0 = np.log(np.array(start_values, dtype=np.float64))
    measured = np.log(np.array([m.measured_s for m in measurements], dtype=np.float64))
    rates = np.array([name.endswith("_per_s") or name.startswith("kernel_efficiency[") for name in free])

    def spec_at(theta: np.ndarray) -> HardwareSpec:
        return with_fields(start, dict(zip(free, np.exp(theta).tolist(), strict=True)), dtype)

    def residuals(theta: np.ndarray) -> np.ndarray:
        hardware = spec_at(theta)
        return np.log(np.array([m.predict_s(hardware) for m in measurements])) - measured

    def cost(theta: np.ndarray, r: np.ndarray) -> float:
        return float(r @ r + ridge * np.sum((theta - theta0) ** 2))

    best = None
    for scale in rate_scales:
        found = _levenberg_marquardt(residuals, cost, theta0 + np.where(rates, math.log(scale), 0.0),
                                     theta0, ridge, max_iterations, tolerance)
        if best is None or found[2] < best[2]:
            best = found
    theta, r, _, iterations = best
    hardware = spec_at(theta)
    errors = [abs(e) for e in relative_errors(hardware, measurements)]
    return FitResult(
        hardware=hardware,
        free=free,
        iterations=iterations,
        rms_log_error=float(math.sqrt(float(r @ r) / len(r))),
        median_abs_rel_error=statistics.median(errors),
        max_abs_rel_error=max(errors),
    )


def _levenberg_marquardt(residuals, cost, theta, theta0, ridge, max_iterations, tolerance):
    """Minimise ``cost(theta, residuals(theta))`` from ``theta``; returns (theta, r, cost, iterations)."""
    r = residuals(theta)
    current = cost(theta, r)
    damping = 1e-3
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        jacobian = _jacobian(residuals, theta, r)
        normal = jacobian.T @ jacobian + ridge * np.eye(len(theta))
        gradient = jacobian.T @ r + ridge * (theta - theta0)
        improved = False
        while damping < 1e12:
            step = np.linalg.solve(normal + damping * np.diag(np.diag(normal) + 1e-12), -gradient)
            trial = theta + step
            trial_r = residuals(trial)
            trial_cost = cost(trial, trial_r)
            if trial_cost < current:
                improved = True
                break
            damping *= 4.0
        if not improved:
            break
        decrease = current - trial_cost
        theta, r, current = trial, trial_r, trial_cost
        damping = max(damping / 3.0, 1e-12)
        if decrease <= tolerance * max(current, 1e-300) or float(np.max(np.abs(step))) < 1e-10:
            break
    return theta, r, current, iterations


def _jacobian(residuals, theta: np.ndarray, r: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """Forward differences of the residuals in log-parameter space."""
    columns = []
    for i in range(len(theta)):
        shifted = theta.copy()
        shifted[i] += step
        columns.append((residuals(shifted) - r) / step)
    return np.stack(columns, axis=1)


__all__ = ["MATMUL_RATE", "TABLES", "FitResult", "fit_hardware", "get_field", "relative_errors", "table_entry",
           "with_fields"]
