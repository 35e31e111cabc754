"""``rmtsched verify``: every schedule against sequential, bit for bit on CPU, non-zero exit on a difference."""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_main

import rmtsched.api as api


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
    real_execute = api.execute

    def perturbed(model, inputs, schedule, **kwargs):
        result = real_execute(model, inputs, schedule, **kwargs)
        if schedule.scheduler != "sequential":
            result.outputs[-1] = result.outputs[-1] + 1e-3
        return result

    monkeypatch.setattr(api, "execute", perturbed)
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
