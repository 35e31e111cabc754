"""``rmtsched schedule --train``: both phases' grids, JSON that validates, one stderr line per bad argument."""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_main

from rmtsched.sched import TrainGraph, TrainSchedule, build_cell_graph, validate_train


def test_train_grid_shows_the_forward_diagonal_and_the_backward_anti_diagonal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_main(capsys, "schedule", "--train", "--layers", "2", "--segments", "3")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "forward (F):"
    assert [line.split() for line in lines[2:4]] == [["1", "1", "2", "3"], ["0", "0", "1", "2"]]
    assert lines[4] == "backward (B):"
    assert [line.split() for line in lines[6:8]] == [["1", "6", "5", "4"], ["0", "7", "6", "5"]]
    assert lines[-1] == "diagonal: 8 steps (4 F, 0 R, 4 B), 0 recomputed cells, max width 2, 1 device(s), full BPTT"


@pytest.mark.parametrize(
    "args",
    [
        ["--schedule", "sequential", "--truncate", "2"],
        ["--schedule", "checkpointed", "--memory-budget", "3"],
        ["--schedule", "greedy", "--rule", "global_memory", "--max-width", "1"],
        ["--schedule", "pipelined", "--devices", "2", "--truncate", "2"],
    ],
)
def test_train_json_is_a_valid_training_schedule(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "schedule", "--train", "--layers", "3", "--segments", "4", "--json", *args)
    assert (code, err) == (0, "")
    data = json.loads(out)
    rule = "global_memory" if "global_memory" in args else "layer_local"
    truncation = 2 if "--truncate" in args else None
    schedule = TrainSchedule.from_dict(data)
    validate_train(schedule, TrainGraph(build_cell_graph(3, 4, rule=rule), truncation))
    assert schedule.num_devices == (2 if "pipelined" in args else 1)
    if "--memory-budget" in args:
        assert {step["phase"] for step in data["steps"]} == {"F", "R", "B"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--truncate", "2"], "--truncate applies to a training schedule: add --train"),
        (["--memory-budget", "2"], "--memory-budget applies to a training schedule: add --train"),
        (["--train", "--truncate", "0"], "--truncate: expected a positive integer, got 0"),
        (["--train", "--devices", "2"], "'diagonal' runs on one device, got num_devices=2"),
        (["--train", "--schedule", "nope"], "unknown training scheduler 'nope'"),
        (["--train", "--schedule", "pipelined", "--devices", "5"], "cannot split 3 layers into 5 non-empty"),
        (["--train", "--memory-budget", "4"], "'diagonal' keeps every activation and takes no memory_budget"),
        (["--train", "--schedule", "checkpointed", "--memory-budget", "1"],
         "memory_budget=1 cells cannot hold one step of 3 cells"),
    ],
)
def test_every_bad_training_argument_exits_2_with_one_stderr_line(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(capsys, "schedule", "--layers", "3", "--segments", "4", *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err
