"""The per-kernel corrections calibration fits: efficiency, own launch cost, per-row launching."""

from __future__ import annotations

import json

import pytest

from rmtsched.calibrate.measurement import Measurement
from rmtsched.errors import SpecError
from rmtsched.sim.cost import CostModel
from rmtsched.sim.workload import Workload
from rmtsched.specs.cost import KernelWork
from rmtsched.specs.hardware import HardwareSpec, load_hardware_spec

BASE = HardwareSpec(name="base", matmul_flops_per_s={"fp32": 1e11}, vector_flops_per_s=1e9,
                    memory_bandwidth_bytes_per_s=1e15, memory_bytes=1e9, launch_overhead_s=1e-5)
KERNELS = (KernelWork("gemm", 1e7), KernelWork("attention", 2e6), KernelWork("norm", 1e5, matmul=False))


def cost(hardware: HardwareSpec) -> CostModel:
    return CostModel(Workload("w", 16, lambda tokens: list(KERNELS), dtype_bytes=4), hardware)


def test_efficiency_slows_only_its_kernel() -> None:
    plain, slow = cost(BASE), cost(BASE.replace(kernel_efficiency={"attention": 0.25}))
    extra = slow.cell_time_s(64) - plain.cell_time_s(64)
    assert extra == pytest.approx(3 * 2e6 / 1e11)  # attention takes 4x as long; nothing else changes


def test_own_launch_replaces_the_default_one() -> None:
    plain, own = cost(BASE), cost(BASE.replace(kernel_launch_overhead_s={"norm": 4e-5}))
    assert own.step_time_s([64] * 8) - plain.step_time_s([64] * 8) == pytest.approx(3e-5)


@pytest.mark.parametrize("width", [1, 2, 7])
def test_per_row_kernels_are_launched_once_per_cell(width: int) -> None:
    hardware = BASE.replace(per_row_kernels=("attention",))
    looped, batched = cost(hardware), cost(BASE)
    assert looped.step_time_s([64]) == pytest.approx(looped.cell_time_s(64))
    assert looped.step_time_s([64] * width) - batched.step_time_s([64] * width) == pytest.approx((width - 1) * 1e-5)


@pytest.mark.parametrize("width", [1, 3])
def test_every_cell_of_a_step_pays_the_cell_overhead(width: int) -> None:
    plain, busy = cost(BASE), cost(BASE.replace(cell_overhead_s=7e-6))
    assert busy.step_time_s([64] * width) - plain.step_time_s([64] * width) == pytest.approx(width * 7e-6)
    assert busy.step_time_s([64]) == pytest.approx(busy.cell_time_s(64))


def test_lone_cell_slowdown_scales_the_work_of_one_cell_steps_only() -> None:
    plain, lone = cost(BASE), cost(BASE.replace(lone_cell_slowdown=1.5))
    launches = len(KERNELS) * BASE.launch_overhead_s
    assert lone.step_time_s([64]) - launches == pytest.approx(1.5 * (plain.step_time_s([64]) - launches))
    assert lone.step_time_s([64]) == pytest.approx(lone.cell_time_s(64))
    assert lone.step_time_s([64] * 2) == pytest.approx(plain.step_time_s([64] * 2))


def test_lone_cell_slowdown_applies_to_executor_measurements_only() -> None:
    hardware = BASE.replace(lone_cell_slowdown=2.0)
    kernel = Measurement("gemm", "kernel", KERNELS[:1], 1, 1.0)
    step = Measurement("step", "step", KERNELS, 1, 1.0)
    assert kernel.predict_s(hardware) == pytest.approx(kernel.predict_s(BASE))
    assert step.predict_s(hardware) > 1.9 * step.predict_s(BASE) - len(KERNELS) * BASE.launch_overhead_s


def test_tables_round_trip_through_json(tmp_path) -> None:
    hardware = BASE.replace(kernel_efficiency={"attention": 0.1}, kernel_launch_overhead_s={"norm": 2e-5},
                            per_row_kernels=["attention"])
    assert hardware.per_row_kernels == ("attention",)
    path = tmp_path / "hw.json"
    hardware.save(path)
    assert load_hardware_spec(path) == hardware
    assert json.loads(path.read_text())["per_row_kernels"] == ["attention"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kernel_efficiency": {"attention": 0.0}}, "kernel_efficiency"),
        ({"kernel_efficiency": [0.5]}, "must map kernel names"),
        ({"kernel_launch_overhead_s": {"norm": -1.0}}, "kernel_launch_overhead_s"),
        ({"per_row_kernels": "attention"}, "per_row_kernels"),
        ({"cell_overhead_s": -1e-6}, "cell_overhead_s"),
        ({"lone_cell_slowdown": 0.0}, "lone_cell_slowdown must be a positive number, got 0.0"),
    ],
)
def test_bad_tables_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        BASE.replace(**changes)
