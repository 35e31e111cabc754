"""The fitting plan: which spec values are fitted to which measurements, in which order.

A plan is data, a tuple of stages run in order, each starting from the spec the previous one left:

1. ``bandwidth``: the streaming benchmark sets the memory bandwidth.
2. ``rates``: the projection GEMMs and the element-wise kernels set the matmul rate and its ramp, the
   vector rate, and the launch cost of one call (a launch is shared, the ramp is the matmul kernels' own,
   which is what tells the two apart); the launch is pinned as the own launch of every projection
   (``LINEAR``, the memory write's included) and element-wise kernel.
3. ``per-kernel``: every other benchmarked kernel gets its own efficiency (rate multiple) and launch cost,
   and is marked per-row when a loop over the step's rows explains its times better (a layout whose rows
   loop, such as an SDPA probed not batch-invariant); the values are copied to kernels the backend
   implements the same way (``mlp_norm`` as ``attn_norm``).
4. ``steps``: whole executor steps and runs set the default launch cost of the kernels no benchmark
   isolates (rotary, residual adds, the executor's own per-step work), the cost per cell of a step (the
   executor's per-cell gather and scatter), the slowdown of a step of one cell (threads idle between a
   lone cell's small ops; the kernel benchmarks' hot loops never show it), and refine the two rates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rmtsched.calibrate.fit import MATMUL_RATE, fit_hardware, get_field, relative_errors
from rmtsched.calibrate.measurement import Measurement
from rmtsched.specs.hardware import HardwareSpec

GEMMS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "mem_read_key")
# Every projection the backend runs through ``RowMatmul.linear``: the benchmarked ones and the write's.
LINEAR = (*GEMMS, "mem_write_proj")
VECTOR = ("attn_norm", "swiglu", "mem_read_phi")
OWN_KERNELS = ("attention", "mem_read", "mem_write_update", "mem_read_phi", "attn_norm", "swiglu")
PER_ROW_MARGIN = 0.7
# Simulator kernels the backend runs with the same code as a benchmarked one.
SIBLINGS: dict[str, tuple[str, ...]] = {
    "attn_norm": ("mlp_norm",),
    "mem_read_phi": ("mem_write_phi",),
    "mem_read": ("mem_write_prev",),
}


@dataclass(frozen=True)
class StageReport:
    """What one stage (or one kernel of the per-kernel stage) fitted, and how well."""

    name: str
    free: tuple[str, ...]
    values: dict[str, float]
    measurements: int
    iterations: int
    median_abs_rel_error: float
    max_abs_rel_error: float


def _of_kernels(measurements: Sequence[Measurement], groups: Sequence[str], kernels: Sequence[str] | None):
    return [
        m for m in measurements
        if m.group in groups and (kernels is None or all(k.name in kernels for k in m.kernels))
    ]


@dataclass(frozen=True)
class Stage:
    """Fit ``free`` values to the measurements of ``groups`` (only those whose kernels are all named in
    ``kernels``, when given); ``prior`` pulls toward the start in log space; ``pin_launch`` names kernels
    whose own launch cost becomes the fitted launch (later stages refit the default one)."""

    name: str
    groups: tuple[str, ...]
    free: tuple[str, ...]
    kernels: tuple[str, ...] | None = None
    prior: float = 1e-4
    pin_launch: tuple[str, ...] = ()

    def apply(
        self, measurements: Sequence[Measurement], hardware: HardwareSpec, dtype: str
    ) -> tuple[HardwareSpec, list[StageReport]]:
        chosen = _of_kernels(measurements, self.groups, self.kernels)
        if not chosen:
            return hardware, []
        result = fit_hardware(chosen, hardware, self.free, ridge=self.prior)
        fitted = result.hardware
        if self.pin_launch:
            own = {**fitted.kernel_launch_overhead_s, **dict.fromkeys(self.pin_launch, fitted.launch_overhead_s)}
            fitted = fitted.replace(kernel_launch_overhead_s=own)
        report = StageReport(self.name, self.free, {n: get_field(fitted, n, dtype) for n in self.free}, len(chosen),
                             result.iterations, result.median_abs_rel_error, result.max_abs_rel_error)
        return fitted, [report]


@dataclass(frozen=True)
class PerKernelStage:
    """Each kernel of ``kernels`` gets its own efficiency and launch, per-row if that fits better."""

    name: str
    kernels: tuple[str, ...]
    siblings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    prior: float = 1e-4

    def apply(
        self, measurements: Sequence[Measurement], hardware: HardwareSpec, dtype: str
    ) -> tuple[HardwareSpec, list[StageReport]]:
        reports = []
        for kernel in self.kernels:
            chosen = _of_kernels(measurements, ("kernel",), (kernel,))
            if not chosen:
                continue
            free = (f"kernel_efficiency[{kernel}]", f"kernel_launch_overhead_s[{kernel}]")
            batched = hardware.replace(per_row_kernels=tuple(k for k in hardware.per_row_kernels if k != kernel))
            looped = batched.replace(per_row_kernels=(*batched.per_row_kernels, kernel))
            as_batched, as_looped = (fit_hardware(chosen, start, free, ridge=self.prior) for start in (batched, looped))
            # Per-row only when it explains the times clearly better: noise alone must not flip a batched kernel.
            result = as_looped if as_looped.rms_log_error < PER_ROW_MARGIN * as_batched.rms_log_error else as_batched
            hardware = _copy_to_siblings(result.hardware, kernel, self.siblings.get(kernel, ()))
            per_row = kernel in hardware.per_row_kernels
            reports.append(StageReport(
                f"{self.name}:{kernel}{' (per row)' if per_row else ''}", free,
                {n: get_field(hardware, n, dtype) for n in free}, len(chosen), result.iterations,
                result.median_abs_rel_error, result.max_abs_rel_error,
            ))
        return hardware, reports


def _copy_to_siblings(hardware: HardwareSpec, kernel: str, siblings: Sequence[str]) -> HardwareSpec:
    if not siblings:
        return hardware
    efficiency, launch = dict(hardware.kernel_efficiency), dict(hardware.kernel_launch_overhead_s)
    per_row = list(hardware.per_row_kernels)
    for sibling in siblings:
        efficiency[sibling], launch[sibling] = efficiency[kernel], launch[kernel]
        if kernel in per_row and sibling not in per_row:
            per_row.append(sibling)
    return hardware.replace(kernel_efficiency=efficiency, kernel_launch_overhead_s=launch,
                            per_row_kernels=tuple(per_row))


DEFAULT_PLAN: tuple[Stage | PerKernelStage, ...] = (
    Stage("bandwidth", ("stream",), ("memory_bandwidth_bytes_per_s",)),
    Stage("rates", ("kernel",), (MATMUL_RATE, "matmul_half_flops", "vector_flops_per_s", "launch_overhead_s"),
          kernels=GEMMS + VECTOR, pin_launch=LINEAR + VECTOR),
    PerKernelStage("per-kernel", OWN_KERNELS, SIBLINGS),
    Stage("steps", ("step", "run"),
          ("launch_overhead_s", "cell_overhead_s", MATMUL_RATE, "vector_flops_per_s", "lone_cell_slowdown"),
          prior=1e-6),
)


def fit_plan(
    measurements: Sequence[Measurement], start: HardwareSpec, plan: Sequence[Stage | PerKernelStage] = DEFAULT_PLAN
) -> tuple[HardwareSpec, tuple[StageReport, ...]]:
    """Run the stages in order; a stage with no measurements of its kind leaves the spec as it is."""
    dtype = next(iter(start.matmul_flops_per_s))
    hardware, reports = start, []
    for stage in plan:
        hardware, stage_reports = stage.apply(measurements, hardware, dtype)
        reports += stage_reports
    return hardware, tuple(reports)


def explained(hardware: HardwareSpec, measurements: Sequence[Measurement]) -> dict[str, float]:
    """Median |relative error| of ``hardware`` per measurement group."""
    groups: dict[str, list[float]] = {}
    for m, error in zip(measurements, relative_errors(hardware, measurements), strict=True):
        groups.setdefault(m.group, []).append(abs(error))
    return {group: sorted(errors)[len(errors) // 2] for group, errors in groups.items()}


__all__ = ["DEFAULT_PLAN", "GEMMS", "LINEAR", "OWN_KERNELS", "SIBLINGS", "PerKernelStage", "Stage", "StageReport",
           "explained", "fit_plan"]
