"""``rmtsched calibrate``: --quick writes a spec the simulator accepts; bad devices/dtypes fail in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from cli_helpers import run_main

from rmtsched.cli.main import main
from rmtsched.specs.hardware import HardwareSpec, load_hardware_spec


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run_main(capsys, *args)


@pytest.fixture(scope="module")
def quick_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One quick calibration shared by the tests of this module (it takes a few seconds)."""
    path = tmp_path_factory.mktemp("calibrate") / "hw.json"
    assert main(["calibrate", "--device", "cpu", "--quick", "--out", str(path), "--no-progress",
                 "--report", str(path.with_suffix(".report.json"))]) == 0
    return path


def test_quick_calibration_writes_a_loadable_spec(quick_spec: Path) -> None:
    spec = load_hardware_spec(quick_spec)
    assert spec.name == "calibrated-cpu-fp32"
    assert set(spec.matmul_flops_per_s) == {"fp32"}
    for value in (spec.matmul_flops_per_s["fp32"], spec.vector_flops_per_s, spec.memory_bandwidth_bytes_per_s,
                  spec.launch_overhead_s, spec.memory_bytes):
        assert math.isfinite(value) and value > 0
    # A calibrated CPU is nowhere near a GPU, and a launch costs between a nanosecond and a tenth of a second.
    assert 1e7 < spec.matmul_flops_per_s["fp32"] < 1e14
    assert 1e-9 < spec.launch_overhead_s < 0.1
    assert HardwareSpec.from_dict(json.loads(quick_spec.read_text())) == spec


def test_report_lists_measurements_and_stages(quick_spec: Path) -> None:
    report = json.loads(quick_spec.with_suffix(".report.json").read_text())
    names = [stage["name"] for stage in report["stages"]]
    assert names[:2] == ["bandwidth", "rates"] and names[-1] == "steps"
    assert any(name.startswith("per-kernel:attention") for name in names)
    groups = {m["group"] for m in report["measurements"]}
    assert groups == {"kernel", "stream", "step", "run"}
    for m in report["measurements"]:
        assert m["measured_s"] > 0 and m["predicted_s"] > 0
        assert m["rel_error"] == pytest.approx(m["predicted_s"] / m["measured_s"] - 1)


def test_simulate_accepts_the_calibrated_spec(capsys, quick_spec: Path) -> None:
    code, out, _ = run_cli(capsys, "simulate", "--model", "armt-tiny", "--seq-len", "512", "--hardware",
                           str(quick_spec), "--schedule", "all", "--json")
    assert code == 0
    records = json.loads(out)
    assert [r["schedule"] for r in records] == ["sequential", "diagonal", "greedy", "pipelined"]  # every registered one
    assert all(r["hardware"] == "calibrated-cpu-fp32" and r["makespan_s"] > 0 for r in records)


def test_without_out_the_spec_is_printed(capsys) -> None:
    code, out, err = run_cli(capsys, "calibrate", "--quick", "--no-progress", "--threads", "1", "--name", "mine")
    assert code == 0
    assert HardwareSpec.from_dict(json.loads(out)).name == "mine"
    assert "stage steps" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--dtype", "fp64"], "unknown dtype 'fp64'"),
        (["--clock", "sundial"], "unknown clock 'sundial'"),
        (["--clock", "process", "--threads", "2"], "process clock needs"),
    ],
)
def test_bad_arguments_fail_in_one_line(capsys, args: list[str], message: str) -> None:
    code, out, err = run_cli(capsys, "calibrate", "--quick", *args)
    assert code == 2
    assert out == ""
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_fails_in_one_line(capsys) -> None:
    code, _, err = run_cli(capsys, "calibrate", "--device", "cuda", "--quick")
    assert code == 2
    assert "cuda" in err and "torch.cuda.is_available() is False" in err
    assert len(err.strip().splitlines()) == 1


def test_threads_are_restored_after_a_run(capsys) -> None:
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    code, _, _ = run_cli(capsys, "calibrate", "--quick", "--no-progress", "--threads", str(other))
    assert code == 0
    assert torch.get_num_threads() == before
