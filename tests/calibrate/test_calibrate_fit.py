"""The fit recovers a known spec from measurements the simulator itself generated from it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rmtsched.calibrate.fit import MATMUL_RATE, fit_hardware, get_field, relative_errors
from rmtsched.calibrate.measurement import Measurement
from rmtsched.calibrate.plan import DEFAULT_PLAN, fit_plan
from rmtsched.sim.workload import workload_from_spec
from rmtsched.specs.cost import KernelWork
from rmtsched.specs.hardware import HardwareSpec
from rmtsched.specs.model import ModelSpec

TRUTH = HardwareSpec(
    name="truth",
    matmul_flops_per_s={"fp32": 7e10},
    vector_flops_per_s=3e9,
    memory_bandwidth_bytes_per_s=1.5e10,
    memory_bytes=16e9,
    launch_overhead_s=2e-5,
    matmul_half_flops=3e6,
    memory_half_bytes=0.0,
    cell_overhead_s=5e-6,
)
FREE = (MATMUL_RATE, "matmul_half_flops", "vector_flops_per_s", "launch_overhead_s")


def spec(d_model: int, family: str = "armt") -> ModelSpec:
    return ModelSpec(f"s{d_model}", family, 9, d_model, max(1, d_model // 32), max(1, d_model // 32), 4 * d_model,
                     256, 64, 16, mem_key_dim=16, dtype_bytes=4)


def synthetic(truth: HardwareSpec, noise: float = 0.0, seed: int = 0) -> list[Measurement]:
    """Each simulator kernel alone and whole cells, over widths and sizes, timed by ``truth`` (times noise)."""
    rng = np.random.default_rng(seed)
    measurements = []
    for d in (64, 128, 256, 512):
        kernels = workload_from_spec(spec(d)).cell_kernels(64)
        for w in (1, 2, 4, 8):
            groups = [("kernel", (k,)) for k in kernels] + [("step", tuple(kernels))]
            for group, work in groups:
                label = work[0].name if len(work) == 1 else "cell"
                probe = Measurement(f"{group}-{label}-{d}-{w}", group, work, w, 1.0)
                seconds = probe.predict_s(truth) * math.exp(noise * rng.standard_normal())
                measurements.append(Measurement(probe.name, group, work, w, seconds))
    stream = KernelWork("stream", 0, 0, 3 * 4 * (1 << 26), matmul=False)
    probe = Measurement("stream", "stream", (stream,), 1, 1.0)
    measurements.append(Measurement("stream", "stream", (stream,), 1, probe.predict_s(truth)))
    return measurements


def perturbed(hardware: HardwareSpec, factor: float, bandwidth: bool = False) -> HardwareSpec:
    """``hardware`` with the fitted fields off by ``factor`` (and the bandwidth too if ``bandwidth``)."""
    return hardware.replace(
        name="start",
        matmul_flops_per_s={"fp32": 7e10 * factor},
        matmul_half_flops=3e6 / factor,
        vector_flops_per_s=3e9 / factor,
        launch_overhead_s=2e-5 * factor,
        cell_overhead_s=5e-6 / factor,
        memory_bandwidth_bytes_per_s=1.5e10 / (factor if bandwidth else 1.0),
    )


@pytest.mark.parametrize("factor", [0.3, 3.0])
def test_fit_recovers_known_parameters(factor: float) -> None:
    measurements = [m for m in synthetic(TRUTH) if m.group == "kernel"]
    result = fit_hardware(measurements, perturbed(TRUTH, factor), FREE)
    for name in FREE:
        assert get_field(result.hardware, name, "fp32") == pytest.approx(get_field(TRUTH, name, "fp32"), rel=1e-4)
    assert result.max_abs_rel_error < 1e-6


def test_fit_with_noise_stays_close() -> None:
    measurements = [m for m in synthetic(TRUTH, noise=0.03, seed=1) if m.group == "kernel"]
    result = fit_hardware(measurements, perturbed(TRUTH, 2.0), FREE)
    for name in FREE:
        assert get_field(result.hardware, name, "fp32") == pytest.approx(get_field(TRUTH, name, "fp32"), rel=0.15)
    assert result.median_abs_rel_error < 0.05


def test_plan_recovers_a_spec_without_per_kernel_corrections() -> None:
    hardware, stages = fit_plan(synthetic(TRUTH), perturbed(TRUTH, 2.5, bandwidth=True), DEFAULT_PLAN)
    names = [stage.name for stage in stages]
    assert names[:2] == ["bandwidth", "rates"] and names[-1] == "steps"
    assert {name.split(":")[0] for name in names[2:-1]} == {"per-kernel"}
    assert hardware.memory_bandwidth_bytes_per_s == pytest.approx(TRUTH.memory_bandwidth_bytes_per_s, rel=1e-3)
    assert hardware.cell_overhead_s == pytest.approx(TRUTH.cell_overhead_s, rel=0.1)
    assert max(abs(e) for e in relative_errors(hardware, synthetic(TRUTH))) < 5e-3
    assert stages[-1].median_abs_rel_error < 1e-4
    # The truth has no per-kernel corrections, so the fitted ones are (close to) neutral and none is per-row.
    assert all(value == pytest.approx(1.0, rel=1e-2) for value in hardware.kernel_efficiency.values())
    assert hardware.per_row_kernels == ()


def test_plan_recovers_the_slowdown_of_one_cell_steps() -> None:
    truth = TRUTH.replace(lone_cell_slowdown=1.4)
    hardware, stages = fit_plan(synthetic(truth), perturbed(TRUTH, 1.5), DEFAULT_PLAN)
    assert hardware.lone_cell_slowdown == pytest.approx(1.4, rel=1e-2)
    assert stages[-1].median_abs_rel_error < 1e-3


def test_plan_finds_a_slow_per_row_attention() -> None:
    truth = TRUTH.replace(kernel_efficiency={"attention": 0.125}, kernel_launch_overhead_s={"attention": 6e-5},
                          per_row_kernels=("attention",))
    hardware, _ = fit_plan(synthetic(truth), perturbed(TRUTH, 1.5), DEFAULT_PLAN)
    assert hardware.per_row_kernels == ("attention",)
    assert hardware.kernel_efficiency["attention"] == pytest.approx(0.125, rel=1e-2)
    assert hardware.kernel_launch_overhead_s["attention"] == pytest.approx(6e-5, rel=1e-2)
    assert max(abs(e) for e in relative_errors(hardware, synthetic(truth))) < 1e-2


def test_fit_is_deterministic() -> None:
    measurements = synthetic(TRUTH, noise=0.05, seed=2)
    first = fit_hardware(measurements, perturbed(TRUTH, 2.0), FREE).hardware
    second = fit_hardware(measurements, perturbed(TRUTH, 2.0), FREE).hardware
    assert first == second


def test_fit_rejects_bad_input() -> None:
    measurements = synthetic(TRUTH)[:3]
    with pytest.raises(ValueError, match="no measurements"):
        fit_hardware([], TRUTH, FREE)
    with pytest.raises(ValueError, match="memory_half_bytes"):
        fit_hardware(measurements, TRUTH, ["memory_half_bytes"])
    with pytest.raises(ValueError, match="width"):
        Measurement("bad", "kernel", measurements[0].kernels, 0, 1.0)
    with pytest.raises(ValueError, match="measured_s"):
        Measurement("bad", "kernel", measurements[0].kernels, 1, float("nan"))
