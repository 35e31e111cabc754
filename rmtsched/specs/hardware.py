"""The hardware spec: what one accelerator (and the links between several) can do, for the cost model.

The simulator reads a ``HardwareSpec``; calibration (issue 6) fits the same fields from measurements and
writes them back as JSON, so a preset and a calibrated file are interchangeable (``--hardware NAME|FILE``).
Presets carry vendors' published peak figures plus efficiency parameters that are our assumptions until
calibration replaces them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmtsched.errors import SpecError
from rmtsched.fileio import atomic_write_text
from rmtsched.specs.presets import Presets

# The matmul dtype a model with ``dtype_bytes`` bytes per element runs in (ModelSpec.dtype_bytes).
DTYPE_BY_BYTES = {1: "fp8", 2: "bf16", 4: "fp32"}


@dataclass(frozen=True)
class HardwareSpec:
    """Peak rates, overheads and the efficiency curve of one device type, and the devices' links.

    Kernel time (``rmtsched.sim.cost``) is a roofline with a saturating efficiency: a kernel of F FLOPs
    and B bytes takes ``launch_overhead_s + max((F + matmul_half_flops) / (matmul_efficiency * peak),
    (B + memory_half_bytes) / (memory_efficiency * memory_bandwidth))``. This is the efficiency curve
    eta(F) = matmul_efficiency * F / (F + matmul_half_flops) written as a time: a small kernel reaches
    only a fraction of peak, a batched (wider) one pays the ramp once. Vector (non-matmul) work runs at
    ``vector_flops_per_s * vector_efficiency``. ``link_bandwidth_bytes_per_s`` and ``link_latency_s``
    describe one device-to-device link; every ordered pair of devices has its own.

    Per-kernel corrections, keyed by ``KernelWork.name`` (empty for the presets; ``rmtsched calibrate``
    fits them for one backend on one device): ``kernel_efficiency`` multiplies the compute rate of that
    kernel (attention through a fused SDPA call runs far below the GEMM rate on a CPU);
    ``kernel_launch_overhead_s`` replaces ``launch_overhead_s`` for it (a modelled kernel the backend
    runs as several framework ops); ``per_row_kernels`` names kernels the backend launches once per cell
    of a batched step (a per-row loop), like ``KernelWork.per_row``. ``cell_overhead_s`` is paid once
    per cell of every step (an executor gathering and scattering each cell's tensors).
    ``lone_cell_slowdown`` multiplies the work (not the launches) of every kernel of a step that holds
    ONE cell: on a multi-core CPU a lone cell's small ops cannot keep the intra-op threads busy, and the
    threads idle (and must be woken) between them, while a step of several cells parallelises across its
    cells. Measured here through the executor: at d_model 512 on 2 threads a one-cell step cost 1.38-1.5x
    the per-cell time of a two-cell step, though isolated GEMMs in a hot loop showed no such gap; 1 (the
    presets) means no such effect. ``rmtsched calibrate`` fits it on whole steps and runs.

    How the device is driven (the runtime). On an accelerator the host issues kernels asynchronously, so
    a step takes ``max(host, device)``: host time is ``host_step_overhead_s`` + ``host_overhead_s`` per
    kernel launched + ``host_cell_overhead_s`` per cell (Python work per cell, no kernel) +
    ``host_row_overhead_s`` per extra launch of a row-looped kernel; device time is the roofline sum above.
    Eager PyTorch pays tens of microseconds of host time per modelled kernel (several framework ops from
    Python each), captured CUDA graphs one launch per step. All host fields 0 (a CPU, where the
    dispatch is the device's own time and ``launch_overhead_s`` carries it) leaves the additive model.
    ``row_loop_fraction`` is the share of a multi-cell step's kernels the backend runs as a loop over rows
    (``RowMatmul``'s auto mode where a batch-invariance probe failed). ``sm_count`` > 0 turns on wave
    quantisation: a kernel's ``KernelWork.tiles`` (summed over a step's cells) fill
    ``ceil(tiles / sm_count)`` waves, and only the filled share of the last wave does work.
    ``runtime_profiles`` maps a runtime name ("eager", "graphs") to the field values it sets;
    ``with_runtime(name)`` applies one and records it in ``runtime``.
    """

    name: str
    matmul_flops_per_s: Mapping[str, float]
    vector_flops_per_s: float
    memory_bandwidth_bytes_per_s: float
    memory_bytes: float
    launch_overhead_s: float
    num_devices: int = 1
    link_bandwidth_bytes_per_s: float = math.inf
    link_latency_s: float = 0.0
    matmul_efficiency: float = 1.0
    matmul_half_flops: float = 0.0
    vector_efficiency: float = 1.0
    memory_efficiency: float = 1.0
    memory_half_bytes: float = 0.0
    kernel_efficiency: Mapping[str, float] = field(default_factory=dict)
    kernel_launch_overhead_s: Mapping[str, float] = field(default_factory=dict)
    per_row_kernels: tuple[str, ...] = ()
    cell_overhead_s: float = 0.0
    lone_cell_slowdown: float = 1.0
    host_overhead_s: float = 0.0
    host_cell_overhead_s: float = 0.0
    host_step_overhead_s: float = 0.0
    host_row_overhead_s: float = 0.0
    row_loop_fraction: float = 0.0
    sm_count: int = 0
    runtime: str = ""
    runtime_profiles: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    notes: str = ""

    def __post_init__(self) -> None:
        for name in ("name", "notes"):
            if not isinstance(getattr(self, name), str):
                raise SpecError(f"hardware spec field {name} must be a string, got {getattr(self, name)!r}")
        if not isinstance(self.matmul_flops_per_s, Mapping) or not self.matmul_flops_per_s:
            raise SpecError(
                f"hardware {self.name!r}: matmul_flops_per_s must map at least one dtype to FLOP/s, "
                f"got {self.matmul_flops_per_s!r}"
            )
        for dtype, rate in self.matmul_flops_per_s.items():
            _require_positive(self.name, f"matmul_flops_per_s[{dtype!r}]", rate)
        for name in ("vector_flops_per_s", "memory_bandwidth_bytes_per_s", "memory_bytes"):
            _require_positive(self.name, name, getattr(self, name))
        # An infinite link is allowed (and the default): it means transfers cost only their latency.
        _require_positive(self.name, "link_bandwidth_bytes_per_s", self.link_bandwidth_bytes_per_s, finite=False)
        for name in ("launch_overhead_s", "link_latency_s", "matmul_half_flops", "memory_half_bytes",
                     "cell_overhead_s"):
            _require_non_negative(self.name, name, getattr(self, name))
        _require_positive(self.name, "lone_cell_slowdown", self.lone_cell_slowdown)
        for name in ("matmul_efficiency", "vector_efficiency", "memory_efficiency"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 < value <= 1:
                raise SpecError(f"hardware {self.name!r}: {name} must be in (0, 1], got {value!r}")
        if not isinstance(self.num_devices, int) or isinstance(self.num_devices, bool) or self.num_devices <= 0:
            raise SpecError(f"hardware {self.name!r}: num_devices must be a positive integer, got {self.num_devices!r}")
        for table in ("kernel_efficiency", "kernel_launch_overhead_s"):
            values = getattr(self, table)
            if not isinstance(values, Mapping):
                raise SpecError(f"hardware {self.name!r}: {table} must map kernel names to numbers, got {values!r}")
            for kernel, value in values.items():
                check = _require_positive if table == "kernel_efficiency" else _require_non_negative
                check(self.name, f"{table}[{kernel!r}]", value)
        kernels = self.per_row_kernels
        if not isinstance(kernels, list | tuple) or not all(isinstance(kernel, str) for kernel in kernels):
            raise SpecError(
                f"hardware {self.name!r}: per_row_kernels must be a list of kernel names, got {self.per_row_kernels!r}"
            )
        object.__setattr__(self, "per_row_kernels", tuple(self.per_row_kernels))
        self._check_runtime_fields()

    def _check_runtime_fields(self) -> None:
        """The host-overhead, wave and runtime-profile fields (see the class docstring)."""
        for name in ("host_overhead_s", "host_cell_overhead_s", "host_step_overhead_s", "host_row_overhead_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise SpecError(f"hardware {self.name!r}: {name} must be a finite number >= 0, got {value!r}")
        fraction = self.row_loop_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
            raise SpecError(
                f"hardware {self.name!r}: row_loop_fraction must be in [0, 1], got {self.row_loop_fraction!r}"
            )
        if not isinstance(self.sm_count, int) or isinstance(self.sm_count, bool) or self.sm_count < 0:
            raise SpecError(f"hardware {self.name!r}: sm_count must be an integer >= 0, got {self.sm_count!r}")
        if not isinstance(self.runtime, str):
            raise SpecError(f"hardware {self.name!r}: runtime must be a runtime name (a string), got {self.runtime!r}")
        if not isinstance(self.runtime_profiles, Mapping):
            raise SpecError(
                f"hardware {self.name!r}: runtime_profiles must map runtime names to field values, "
                f"got {self.runtime_profiles!r}"
            )
        settable = {f.name for f in dataclasses.fields(self)} - {"name", "runtime", "runtime_profiles", "notes"}
        for runtime, values in self.runtime_profiles.items():
            if not isinstance(values, Mapping) or set(values) - settable:
                raise SpecError(
                    f"hardware {self.name!r}: runtime profile {runtime!r} must map spec fields to values, got "
                    f"{values!r}; settable fields: {sorted(settable)}"
                )

    def with_runtime(self, runtime: str) -> HardwareSpec:
        """This device driven by ``runtime`` ("eager", "graphs"): the profile's values replace the fields."""
        if runtime not in self.runtime_profiles:
            raise SpecError(
                f"hardware {self.name!r} has no runtime {runtime!r}: expected one of {sorted(self.runtime_profiles)}"
            )
        return self.replace(**self.runtime_profiles[runtime], runtime=runtime)

    def matmul_peak_flops_per_s(self, dtype: int | str) -> float:
        """Dense matmul peak for a dtype name ("bf16") or element size in bytes (2 -> bf16, 4 -> fp32, 1 -> fp8)."""
        name = DTYPE_BY_BYTES.get(dtype) if isinstance(dtype, int) else dtype
        if name is None or name not in self.matmul_flops_per_s:
            raise SpecError(
                f"hardware {self.name!r} has no matmul rate for dtype {dtype!r} ({name or 'unknown size'}): "
                f"it lists {sorted(self.matmul_flops_per_s)}"
            )
        return float(self.matmul_flops_per_s[name])

    def transfer_time_s(self, num_bytes: float) -> float:
        """One point-to-point transfer of ``num_bytes`` over a link: latency + bytes / bandwidth."""
        return self.link_latency_s + num_bytes / self.link_bandwidth_bytes_per_s

    def replace(self, **changes: Any) -> HardwareSpec:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise SpecError(f"unknown hardware spec field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["matmul_flops_per_s"] = dict(self.matmul_flops_per_s)
        data["kernel_efficiency"] = dict(self.kernel_efficiency)
        data["kernel_launch_overhead_s"] = dict(self.kernel_launch_overhead_s)
        data["per_row_kernels"] = list(self.per_row_kernels)
        data["runtime_profiles"] = {name: dict(values) for name, values in self.runtime_profiles.items()}
        if math.isinf(self.link_bandwidth_bytes_per_s):
            del data["link_bandwidth_bytes_per_s"]  # the default; JSON has no infinity
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, path: str | Path) -> None:
        """Write the spec as JSON atomically: an interrupted save leaves the old file, never half a spec."""
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HardwareSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise SpecError(f"unknown hardware spec field(s) {sorted(unknown)}; expected some of {sorted(names)}")
        required = {
            f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = required - set(data)
        if missing:
            raise SpecError(f"hardware spec is missing field(s) {sorted(missing)}")
        if not isinstance(data["matmul_flops_per_s"], Mapping):
            raise SpecError(
                f"matmul_flops_per_s must map dtype names to FLOP/s, got {data['matmul_flops_per_s']!r}"
            )
        return cls(**data)


def _is_number(value: Any) -> bool:
    """An int or float, not a bool (JSON's ``true`` would otherwise pass as 1)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _require_positive(spec_name: str, field_name: str, value: Any, *, finite: bool = True) -> None:
    if not _is_number(value) or not value > 0 or (finite and not math.isfinite(value)):
        kind = "a positive number" if finite else "a positive number or infinity"
        raise SpecError(f"hardware {spec_name!r}: {field_name} must be {kind}, got {value!r}")


def _require_non_negative(spec_name: str, field_name: str, value: Any) -> None:
    if not _is_number(value) or not value >= 0 or not math.isfinite(value):
        raise SpecError(f"hardware {spec_name!r}: {field_name} must be a finite number >= 0, got {value!r}")


_PRESETS: Presets[HardwareSpec] = Presets("hardware", HardwareSpec.from_dict)


def register_hardware_spec(spec: HardwareSpec) -> HardwareSpec:
    """Make ``spec`` available by name to ``load_hardware_spec`` and ``--hardware``."""
    return _PRESETS.register(spec)


def available_hardware_specs() -> list[str]:
    return _PRESETS.names()


def load_hardware_spec(name_or_path: str | Path) -> HardwareSpec:
    """A preset by name, or a spec from a JSON file of ``HardwareSpec`` fields (what calibration writes)."""
    return _PRESETS.load(name_or_path)


# How the GPU presets are driven, and why (bench/README.md, "Simulator on GPUs", has the replay against the
# H200 measurements). Per modelled kernel (specs/armt_cost.py: 19 per ARMT cell), eager PyTorch running
# our backend from Python costs 73 us of host time: fitted by `rmtsched calibrate --device cuda` on the
# one H200 host this project measured (bench/README.md), where a one-cell step of armt-small spent its
# time launching. It is a property of the host and the framework, not of the GPU, so all GPU presets use
# it. Per cell of a step the executor does Python work without kernels (take/put/unbind; the CPU executor
# measured +1.3% over a hand-written loop, ~30 us a cell on this 2-core host: ~10 us on a server CPU);
# per step ~20 us (grouping runs, one stack, the forward_layers call); one extra row of a row-looped GEMM
# is one eager op, ~10 us (PyTorch dispatch + cudaLaunchKernel from Python, commonly 5-10 us). On the
# device an eager kernel costs at least ~4 us (launch latency plus a tail); a kernel node of a captured
# CUDA graph ~1.5 us, and one graph launch per step ~10 us of host time replaces the per-op host cost.
_RUNTIMES = {
    "eager": dict(
        host_overhead_s=73e-6, host_cell_overhead_s=10e-6, host_step_overhead_s=20e-6, host_row_overhead_s=10e-6,
        launch_overhead_s=4e-6,
    ),
    "graphs": dict(
        host_overhead_s=0.0, host_cell_overhead_s=0.0, host_step_overhead_s=10e-6, host_row_overhead_s=0.0,
        launch_overhead_s=1.5e-6,
    ),
}


def _gpu(matmul_efficiency: float, attention_efficiency: float, sm_count: int, **figures: Any) -> HardwareSpec:
    """A GPU preset run eagerly. Large bf16 GEMMs reach ``matmul_efficiency`` of dense peak (published cuBLAS
    curves: ~80% on A100, ~70% on H100/H200 at 8k^3), a kernel's fill and drain cost ~1 us at that rate
    (``matmul_half_flops``), output tiles run in waves over ``sm_count`` SMs; FlashAttention-2's forward
    reaches ``attention_efficiency`` of peak at long sequences (its paper: ~60% on A100; ~35% on H100,
    which it does not use Hopper's instructions for); streaming kernels ~85% of HBM bandwidth (STREAM-like
    copies), ~0.5 us ramp (``memory_half_bytes``); elementwise math is memory-bound either way."""
    peak = figures["matmul_flops_per_s"]["bf16"]
    spec = HardwareSpec(
        matmul_efficiency=matmul_efficiency,
        matmul_half_flops=1e-6 * matmul_efficiency * peak,
        kernel_efficiency={"attention": round(attention_efficiency / matmul_efficiency, 6)},
        sm_count=sm_count,
        vector_efficiency=0.5,
        memory_efficiency=0.85,
        memory_half_bytes=0.5e-6 * 0.85 * figures["memory_bandwidth_bytes_per_s"],
        link_latency_s=10e-6,
        num_devices=8,
        launch_overhead_s=_RUNTIMES["eager"]["launch_overhead_s"],
        runtime_profiles=_RUNTIMES,
        **figures,
    )
    return register_hardware_spec(spec.with_runtime("eager"))


_RUNTIME_NOTE = (
    " Efficiencies: see _gpu in rmtsched/specs/hardware.py. Runtime eager (default; 73 us host per modelled "
    "kernel, measured on an H200 host with this backend) or graphs (--runtime graphs)."
)

H100_SXM = _gpu(
    0.7, 0.35, 132,
    name="h100-sxm",
    matmul_flops_per_s={"fp8": 1979e12, "bf16": 989e12, "fp16": 989e12, "tf32": 494.5e12, "fp32": 67e12},
    vector_flops_per_s=67e12,
    memory_bandwidth_bytes_per_s=3.35e12,
    memory_bytes=80e9,
    link_bandwidth_bytes_per_s=900e9,
    notes=(
        "NVIDIA H100 SXM5 datasheet (nvidia.com/en-us/data-center/h100): dense (no sparsity) tensor-core "
        "peaks 989 TFLOP/s bf16/fp16, 1979 fp8, 494.5 tf32; 67 TFLOP/s fp32 non-tensor; 80 GB HBM3 at "
        "3.35 TB/s; NVLink 4 900 GB/s per GPU (total, both directions); 132 SMs." + _RUNTIME_NOTE
    ),
)

H200 = _gpu(
    0.7, 0.35, 132,
    name="h200",
    matmul_flops_per_s={"fp8": 1979e12, "bf16": 989e12, "fp16": 989e12, "tf32": 494.5e12, "fp32": 67e12},
    vector_flops_per_s=67e12,
    memory_bandwidth_bytes_per_s=4.8e12,
    memory_bytes=141e9,
    link_bandwidth_bytes_per_s=900e9,
    notes=(
        "NVIDIA H200 SXM datasheet (nvidia.com/en-us/data-center/h200): the H100's compute (989 TFLOP/s "
        "dense bf16, 132 SMs) with 141 GB HBM3e at 4.8 TB/s; NVLink 900 GB/s per GPU." + _RUNTIME_NOTE
    ),
)

A100_80GB = _gpu(
    0.8, 0.6, 108,
    name="a100-80gb",
    matmul_flops_per_s={"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    vector_flops_per_s=19.5e12,
    memory_bandwidth_bytes_per_s=2.039e12,
    memory_bytes=80e9,
    link_bandwidth_bytes_per_s=600e9,
    notes=(
        "NVIDIA A100 80GB SXM datasheet (nvidia.com/en-us/data-center/a100): dense 312 TFLOP/s bf16/fp16, "
        "156 tf32, 19.5 fp32; 80 GB HBM2e at 2,039 GB/s; NVLink 3 600 GB/s per GPU; 108 SMs. No fp8."
        + _RUNTIME_NOTE
    ),
)

CPU_GENERIC = register_hardware_spec(HardwareSpec(
    name="cpu-generic",
    matmul_flops_per_s={"fp32": 1e11, "bf16": 5e10},
    vector_flops_per_s=2e10,
    memory_bandwidth_bytes_per_s=2e10,
    memory_bytes=16e9,
    launch_overhead_s=10e-6,
    num_devices=4,
    link_bandwidth_bytes_per_s=5e9,
    link_latency_s=50e-6,
    matmul_efficiency=0.6,
    matmul_half_flops=1e7,
    vector_efficiency=0.5,
    memory_efficiency=0.7,
    memory_half_bytes=1e5,
    notes=(
        "A rough few-core x86 host (not a vendor figure): ~100 GFLOP/s fp32 GEMM, 20 GB/s DRAM, ~10 us "
        "PyTorch op dispatch; devices are processes on one host talking over gloo/localhost. Calibrate it."
    ),
))


__all__ = [
    "A100_80GB",
    "CPU_GENERIC",
    "DTYPE_BY_BYTES",
    "H100_SXM",
    "H200",
    "HardwareSpec",
    "available_hardware_specs",
    "load_hardware_spec",
    "register_hardware_spec",
]
