"""``rmtsched schedule``: the grid, the JSON, and one clear stderr line for every bad argument."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cli_helpers import run_main

from rmtsched.sched import Schedule, build_cell_graph, make_schedule, validate


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    return run_main(capsys, "schedule", *args)


def test_grid_output_shows_the_diagonal_wavefront(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["--layers", "3", "--segments", "5"], capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[1].split() == ["2", "2", "3", "4", "5", "6"]
    assert lines[3].split() == ["0", "0", "1", "2", "3", "4"]
    assert lines[-1] == "diagonal: 7 steps, 15 cells, max width 3, 1 device(s)"


@pytest.mark.parametrize(
    ("args", "scheduler"),
    [
        (["--scheduler", "diagonal"], "diagonal"),
        (["--scheduler", "diagonal", "--max-width", "2"], "diagonal"),
        (["--scheduler", "sequential"], "sequential"),
        (["--scheduler", "greedy", "--rule", "global_memory"], "greedy"),
        (["--scheduler", "pipelined", "--devices", "2"], "pipelined"),
    ],
)
def test_json_output_has_scheduler_steps_and_num_steps(
    args: list[str], scheduler: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["--layers", "4", "--segments", "6", "--json", *args], capsys)
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["scheduler"] == scheduler
    assert data["num_steps"] == len(data["steps"])
    assert all(isinstance(step, list) and all(len(cell) == 2 for cell in step) for step in data["steps"])
    rule = "global_memory" if "global_memory" in args else "layer_local"
    graph = build_cell_graph(4, 6, rule=rule)
    validate(Schedule.from_dict(data), graph)
    if scheduler == "diagonal" and "--max-width" not in args:
        assert data["steps"] == make_schedule(graph, "diagonal").to_dict()["steps"]
    if "--max-width" in args:
        assert max(len(step) for step in data["steps"]) == 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--layers", "0", "--segments", "3"], "--layers: expected a positive integer, got 0"),
        (["--layers", "3", "--segments", "0"], "--segments: expected a positive integer, got 0"),
        (["--layers", "x", "--segments", "3"], "--layers: expected a positive integer, got 'x'"),
        (["--segments", "3"], "the following arguments are required: --layers"),
        (["--layers", "3", "--segments", "3", "--max-width", "-1"], "--max-width: expected a positive integer, got -1"),
        (["--layers", "3", "--segments", "3", "--max-width", "0"], "--max-width: expected a positive integer, got 0"),
        (["--layers", "3", "--segments", "3", "--devices", "0"], "--devices: expected a positive integer, got 0"),
        (["--layers", "3", "--segments", "3", "--scheduler", "nope"], "unknown scheduler 'nope'"),
        (["--layers", "3", "--segments", "3", "--rule", "nope"], "invalid choice: 'nope'"),
        (
            ["--layers", "2", "--segments", "3", "--scheduler", "pipelined", "--devices", "3"],
            "cannot split 2 layers into 3 non-empty pipeline stages",
        ),
        (["--layers", "2", "--segments", "3", "--devices", "2"], "'diagonal' runs on one device, got num_devices=2"),
        (
            ["--layers", "2", "--segments", "3", "--scheduler", "greedy", "--devices", "2"],
            "'greedy' runs on one device",
        ),
    ],
)
def test_every_bad_argument_exits_non_zero_with_one_stderr_line(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(args, capsys)
    assert code != 0
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("rmtsched schedule: error: ")
    assert needle in err
    assert "Traceback" not in err


def test_python_dash_m_entry_point_runs_the_schedule_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rmtsched", "schedule", "--layers", "2", "--segments", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["steps"] == [[[0, 0]], [[0, 1], [1, 0]], [[0, 2], [1, 1]], [[1, 2]]]
    assert data["num_steps"] == 4
    bad = subprocess.run(
        [sys.executable, "-m", "rmtsched", "schedule", "--layers", "0", "--segments", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1 and "Traceback" not in bad.stderr
