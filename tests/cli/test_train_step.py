"""``rmtsched train-step``: per-step losses of toy recall under a training schedule, JSON, one-line errors."""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_main

from rmtsched.backends.torch.threads import intra_op_threads

SMALL = ["train-step", "--model", "armt-tiny", "--steps", "3", "--pairs", "2", "--batch-size", "2", "--vocab-size", "8"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny GEMMs on a shared two-core machine run far faster on one intra-op thread."""
    with intra_op_threads(1):
        yield


def test_text_lists_every_step_and_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, *SMALL, "--schedule", "checkpointed", "--memory-budget", "3")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["step    0", "step    1", "step    2"]
    assert lines[3].startswith("armt-tiny (armt), checkpointed: loss ")
    assert "cells recomputed" in lines[3]


def test_every_schedule_takes_the_same_steps_bit_for_bit(capsys: pytest.CaptureFixture[str]) -> None:
    """Exact gradients mean the same Adam trajectory whatever the schedule: identical losses."""
    losses = {}
    for schedule in ("sequential", "diagonal", "greedy"):
        code, out, err = run_main(capsys, *SMALL, "--schedule", schedule, "--json", "--model", "rmt-tiny")
        assert (code, err) == (0, "")
        record = json.loads(out)
        assert record["schedule"] == schedule and len(record["losses"]) == 3
        losses[schedule] = record["losses"]
    assert losses["sequential"] == losses["diagonal"] == losses["greedy"]


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_two_processes_take_the_same_steps_as_one(capsys: pytest.CaptureFixture[str]) -> None:
    """Ranks and this process run one intra-op thread each (fast here); the losses must match bit for bit."""
    small = [*SMALL, "--steps", "2", "--json"]
    code, out, err = run_main(capsys, *small, "--schedule", "sequential")
    assert (code, err) == (0, "")
    one = json.loads(out)
    code, out, err = run_main(capsys, *small, "--schedule", "pipelined", "--devices", "2", "--threads-per-process", "1")
    assert (code, err) == (0, "")
    two = json.loads(out)
    assert (one["devices"], two["devices"], len(two["losses"])) == (1, 2, 2)
    assert two["losses"] == one["losses"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--schedule", "nope"], "unknown training scheduler 'nope'"),
        (["--vocab-size", "3"], "needs a vocabulary of at least 4 tokens, got 3"),
        (["--steps", "0"], "--steps: expected a positive integer, got 0"),
        (["--model", "nope"], "nope"),
        (["--schedule", "diagonal", "--memory-budget", "4"], "'diagonal' keeps every activation"),
        (["--schedule", "diagonal", "--devices", "2"], "'diagonal' runs on one device, got num_devices=2"),
        (["--devices", "0"], "--devices: expected a positive integer, got 0"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, *SMALL, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err
