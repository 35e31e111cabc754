"""``rmtsched verify``: every schedule against sequential, bit for bit on CPU, non-zero exit on a difference."""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_main

import rmtsched.api.model as api_model
import rmtsched.api.verification as api_verify


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    return run_main(capsys, "verify", *args)


@pytest.mark.parametrize(("model", "dtype"), [("armt-tiny", "fp32"), ("rmt-tiny", "fp64")])
def test_every_schedule_is_bitwise_equal(model: str, dtype: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--model", model, "--seq-len", "29", "--segment-len", "6", "--mem-tokens", "2", "--dtype", dtype]
    code, out, err = run_cli([*args, "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    names = {row["schedule"] for row in report["schedules"]}
    assert {"diagonal", "greedy", "pipelined", "pipelined/P4", "diagonal/w2"} <= names
    assert report["ok"] and report["tolerance"] == 0.0
    assert all(row["bitwise_equal"] and row["max_abs_diff"] == 0.0 for row in report["schedules"])
    widths = {row["schedule"]: row["max_width"] for row in report["schedules"]}
    assert widths["diagonal"] == (4 if model.startswith("armt") else 1)


def test_text_report_says_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["--model", "armt-tiny", "--seq-len", "10", "--segment-len", "4"], capsys)
    assert code == 0
    assert out.splitlines()[-1] == "OK: every schedule within tolerance"


def test_a_differing_schedule_fails_with_exit_1(monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The report logic: perturb every non-sequential run's outputs and verify must fail loudly."""
    real_execute = api_verify.execute

    def perturbed(model, inputs, schedule, **kwargs):
        result = real_execute(model, inputs, schedule, **kwargs)
        if schedule.scheduler != "sequential":
            result.outputs[-1] = result.outputs[-1] + 1e-3
        return result

    monkeypatch.setattr(api_verify, "execute", perturbed)
    code, out, _ = run_cli(["--model", "armt-tiny", "--seq-len", "10", "--segment-len", "4", "--json"], capsys)
    report = json.loads(out)
    assert code == 1 and not report["ok"]
    assert all(not row["bitwise_equal"] and row["max_abs_diff"] == pytest.approx(1e-3, rel=1e-2)
               for row in report["schedules"])
    code, _, _ = run_cli(["--model", "armt-tiny", "--seq-len", "10", "--segment-len", "4", "--tolerance", "0.01"],
                         capsys)
    assert code == 0


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["--model", "armt-tiny", "--seq-len", "0"], capsys)
    assert code == 2 and "positive integer" in err
    code, _, err = run_cli(["--model", "armt-tiny", "--seq-len", "8", "--dtype", "fp16"], capsys)
    assert code == 2 and "not supported on cpu" in err


@pytest.fixture
def nan_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every loaded model gets a NaN in layer 1's attention output projection (weights that make NaN)."""
    real_load = api_model.load_model

    def poisoned(*args, **kwargs):
        model = real_load(*args, **kwargs)
        model.params["wo"][1, 0, 0] = float("nan")
        return model

    monkeypatch.setattr(api_model, "load_model", poisoned)


@pytest.mark.usefixtures("nan_weights")
def test_nan_outputs_fail_whatever_the_tolerance(capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: max(diff, nan) dropped the NaN and a schedule with NaN outputs was reported OK, exit 0."""
    args = ["--model", "armt-tiny", "--seq-len", "10", "--segment-len", "4"]
    code, out, _ = run_cli([*args, "--json", "--tolerance", "1e30"], capsys)
    report = json.loads(out)  # strict JSON: no NaN literal
    assert code == 1 and not report["ok"] and report["reference_nonfinite"] > 0
    assert all(row["nonfinite"] > 0 and row["max_abs_diff"] is None and not row["within_tolerance"]
               for row in report["schedules"])
    code, out, _ = run_cli(args, capsys)
    assert code == 1 and out.splitlines()[-1].startswith("FAILED: NaN/inf in the outputs of sequential, ")


@pytest.mark.usefixtures("nan_weights")
def test_run_with_nan_outputs_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "run", "--model", "armt-tiny", "--seq-len", "10", "--schedule", "diagonal",
                              "--json")
    assert code == 1 and json.loads(out)["nonfinite_outputs"] > 0
    assert "NaN/inf" in err and len(err.strip().splitlines()) == 1


def test_verify_reads_a_tokens_file(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    tokens = tmp_path / "ids.txt"
    tokens.write_text("1 2 3 4 5 6 7 8 9 10 11")
    code, out, err = run_cli(["--model", "armt-tiny", "--segment-len", "4", "--tokens", str(tokens), "--json"], capsys)
    report = json.loads(out)
    assert code == 0, err
    assert report["ok"] and report["seq_len"] == 11 and report["input"]["source"].startswith("tokens file")
