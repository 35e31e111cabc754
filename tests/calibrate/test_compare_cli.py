"""``rmtsched compare``: predicted and measured time per schedule, speedups, JSON keys, one-line errors."""

from __future__ import annotations

import importlib
import json
import math

import pytest
from cli_helpers import run_main

from rmtsched.specs.hardware import load_hardware_spec

KEYS = {"schedule", "predicted_s", "measured_s", "rel_error", "predicted_speedup_vs_sequential",
        "measured_speedup_vs_sequential", "speedup_rel_error", "steps", "model", "hardware", "device"}
TINY = ["--model", "armt-tiny", "--seq-len", "200", "--hardware", "cpu-generic", "--repeat", "1", "--no-progress",
        "--threads", "1"]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run_main(capsys, "compare", *args)


def test_json_has_every_schedule_with_finite_numbers(capsys) -> None:
    code, out, _ = run_cli(capsys, *TINY, "--json")
    assert code == 0
    records = json.loads(out)
    names = [r["schedule"] for r in records]
    assert names[0] == "sequential" and "diagonal" in names
    for record in records:
        assert set(record) >= KEYS
        for key in ("predicted_s", "measured_s", "rel_error", "predicted_speedup_vs_sequential",
                    "measured_speedup_vs_sequential"):
            assert math.isfinite(record[key])
        assert record["predicted_s"] > 0 and record["measured_s"] > 0
        assert record["rel_error"] == pytest.approx(record["predicted_s"] / record["measured_s"] - 1)
        assert (record["layers"], record["segments"], record["cells"]) == (4, 4, 16)
    sequential, diagonal = records[0], records[names.index("diagonal")]
    assert sequential["predicted_speedup_vs_sequential"] == 1.0 and sequential["steps"] == 16
    assert diagonal["steps"] == 7  # S + L - 1 waves
    assert diagonal["predicted_speedup_vs_sequential"] == pytest.approx(
        sequential["predicted_s"] / diagonal["predicted_s"])


def test_table_shows_both_times_and_the_speedup_line(capsys) -> None:
    code, out, _ = run_cli(capsys, *TINY, "--schedule", "sequential", "--schedule", "diagonal", "--threads", "1")
    assert code == 0
    assert "armt-tiny on cpu (fp32, 1 threads)" in out
    assert "predicted" in out and "measured" in out
    assert "diagonal vs sequential: predicted" in out
    assert "median |error| over schedules" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no-such-model", "--seq-len", "64", "--hardware", "cpu-generic"], "unknown model"),
        (["--model", "armt-tiny", "--seq-len", "64", "--hardware", "no-such-hw"], "unknown hardware"),
        (["--model", "armt-tiny", "--seq-len", "64", "--hardware", "cpu-generic", "--device", "tpu"],
         "unknown device"),
        (["--model", "armt-tiny", "--seq-len", "64", "--hardware", "cpu-generic", "--schedule", "nope"],
         "unknown scheduler"),
    ],
)
def test_bad_input_fails_in_one_line(capsys, args: list[str], message: str) -> None:
    code, out, err = run_cli(capsys, *args, "--no-progress")
    assert code == 2
    assert out == ""
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.distributed
def test_pipelined_on_two_processes_compares_per_rank_busy_time(capsys) -> None:
    code, out, _ = run_cli(capsys, *TINY, "--schedule", "sequential", "--devices", "2", "--json")
    assert code == 0
    pipelined = json.loads(out)[-1]
    assert (pipelined["schedule"], pipelined["devices"]) == ("pipelined", 2)
    assert [rank["layers"] for rank in pipelined["ranks"]] == [[0, 2], [2, 4]]
    for rank in pipelined["ranks"]:
        assert rank["predicted_busy_s"] > 0 and rank["measured_busy_s"] > 0
        assert math.isfinite(rank["rel_error"])
    assert pipelined["measured_s"] >= max(rank["measured_busy_s"] for rank in pipelined["ranks"])


def test_too_many_pipeline_devices_fail_before_any_run(capsys, tmp_path, monkeypatch) -> None:
    one_device = tmp_path / "one.json"
    load_hardware_spec("cpu-generic").replace(num_devices=1).save(one_device)
    compare_module = importlib.import_module("rmtsched.calibrate.compare")  # the package's `compare` is a function
    monkeypatch.setattr(compare_module, "compare", lambda *a, **k: pytest.fail("compare ran"))
    code, out, err = run_cli(capsys, "--model", "armt-tiny", "--seq-len", "200", "--hardware", str(one_device),
                             "--devices", "2")
    assert code == 2 and out == ""
    assert "has 1 devices, asked for 2" in err and "--threads" in err


def test_the_baseline_is_a_row_and_diagonal_is_compared_with_it(capsys) -> None:
    code, out, _ = run_cli(capsys, *TINY, "--json")
    assert code == 0
    records = {r["schedule"]: r for r in json.loads(out)}
    baseline, diagonal = records["full-attention"], records["diagonal"]
    assert baseline["steps"] == 4 and baseline["predicted_s"] > 0 and baseline["measured_s"] > 0
    assert baseline["steps_by_width"] == [] and baseline["measured_speedup_vs_full_attention"] == 1.0
    assert diagonal["predicted_speedup_vs_full_attention"] == pytest.approx(
        baseline["predicted_s"] / diagonal["predicted_s"])
    assert diagonal["measured_speedup_vs_full_attention"] == pytest.approx(
        baseline["measured_s"] / diagonal["measured_s"])


def test_steps_are_compared_per_width(capsys) -> None:
    code, out, _ = run_cli(capsys, *TINY, "--schedule", "sequential", "--schedule", "diagonal",
                           "--json")
    assert code == 0
    sequential, diagonal = json.loads(out)
    assert [(w["width"], w["steps"]) for w in sequential["steps_by_width"]] == [(1, 16)]
    # 4 layers x 4 segments: widths 1, 2, 3 twice each (ramp up and down), 4 once.
    assert [(w["width"], w["steps"]) for w in diagonal["steps_by_width"]] == [(1, 2), (2, 2), (3, 2), (4, 1)]
    for width in diagonal["steps_by_width"]:
        assert width["predicted_median_s"] > 0 and width["measured_median_s"] > 0
        assert abs(width["worst_error"]) >= abs(width["median_error"])


def test_the_table_has_the_baseline_and_the_step_errors(capsys) -> None:
    code, out, _ = run_cli(capsys, *TINY, "--schedule", "diagonal", "--schedule", "full-attention")
    assert code == 0
    assert "diagonal vs full attention: predicted" in out and "diagonal vs sequential" not in out
    assert "full-attention  4 " in out
    assert "per step width" in out and "  diagonal: w=1 x2 " in out


def test_trace_dir_holds_the_measured_and_simulated_trace_of_each_schedule(capsys, tmp_path) -> None:
    trace_dir = tmp_path / "traces"
    code, _, err = run_cli(capsys, *TINY, "--schedule", "sequential", "--schedule", "diagonal",
                           "--schedule", "full-attention", "--trace-dir", str(trace_dir))
    assert code == 0, err
    assert sorted(p.name for p in trace_dir.iterdir()) == [
        "diagonal.measured.json", "diagonal.simulated.json", "sequential.measured.json", "sequential.simulated.json"]
    for schedule in ("sequential", "diagonal"):
        names = [
            [e["name"] for e in json.loads((trace_dir / f"{schedule}.{kind}.json").read_text())["traceEvents"]
             if e.get("cat") in ("step", "cell")]
            for kind in ("measured", "simulated")
        ]
        assert names[0] == names[1] and len(names[0]) > 0


def test_a_bad_trace_dir_fails_before_any_run(capsys, tmp_path, monkeypatch) -> None:
    compare_module = importlib.import_module("rmtsched.calibrate.compare")
    monkeypatch.setattr(compare_module, "build_model", lambda *a, **k: pytest.fail("a model was built"))
    code, out, err = run_cli(capsys, *TINY, "--trace-dir", str(tmp_path / "missing" / "traces"))
    assert code == 2 and out == ""
    assert "trace directory" in err and "does not exist" in err
    (tmp_path / "file").write_text("")
    code, _, err = run_cli(capsys, *TINY, "--trace-dir", str(tmp_path / "file"))
    assert code == 2 and "is a file: expected a directory" in err
