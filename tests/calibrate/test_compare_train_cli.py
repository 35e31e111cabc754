"""``rmtsched compare --train``: per training schedule the simulator's step time and peak activation bytes beside
the measured ones, JSON records, the table, and one-line errors."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import math

import pytest
from cli_helpers import run_main

from rmtsched.calibrate import compare_train, resolve_target
from rmtsched.cli.main import main
from rmtsched.sched import TrainGraph, graph_for_tokens, make_train_schedule
from rmtsched.sim import CostModel, workload_from_spec
from rmtsched.sim.train import simulate_train
from rmtsched.sim.workload import with_batch
from rmtsched.specs import guard
from rmtsched.specs.hardware import load_hardware_spec
from rmtsched.specs.model import load_model_spec

# armt-tiny (4 layers) with 16-token segments: 64 tokens = 4 segments.
TINY = ["compare", "--train", "--model", "armt-tiny", "--segment-len", "16", "--seq-len", "64", "--hardware",
        "cpu-generic", "--repeat", "1", "--threads", "1", "--no-progress"]
KEYS = {"schedule", "train", "model", "hardware", "device", "dtype", "threads", "seq_len", "batch_size", "layers",
        "segments", "cells", "truncation", "memory_budget", "steps", "recomputed_cells", "predicted_s", "measured_s",
        "measured_runs_s", "rel_error", "predicted_speedup_vs_sequential", "measured_speedup_vs_sequential",
        "speedup_rel_error", "predicted_peak_activation_bytes", "measured_peak_activation_bytes", "memory_rel_error",
        "rmtsched_version"}


@pytest.fixture(scope="module")
def default_records() -> list[dict]:
    """The default comparison's JSON, run once for the module (``capsys`` is per test, so stdout is caught here)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*TINY, "--json"]) == 0
    return json.loads(out.getvalue())


def test_every_one_device_training_scheduler_is_a_record_sequential_first(default_records: list[dict]) -> None:
    names = [record["schedule"] for record in default_records]
    assert names[0] == "sequential"
    assert {"sequential", "diagonal", "checkpointed", "greedy"} <= set(names)
    for record in default_records:
        assert set(record) >= KEYS
        assert record["train"] is True and record["model"] == "armt-tiny" and record["batch_size"] == 1
        assert (record["layers"], record["segments"], record["cells"]) == (4, 4, 16)
        for key in ("predicted_s", "measured_s", "predicted_peak_activation_bytes", "measured_peak_activation_bytes"):
            assert math.isfinite(record[key]) and record[key] > 0
        assert record["rel_error"] == pytest.approx(record["predicted_s"] / record["measured_s"] - 1)
        assert record["memory_rel_error"] == pytest.approx(
            record["predicted_peak_activation_bytes"] / record["measured_peak_activation_bytes"] - 1)


def test_the_prediction_is_simulate_train_of_the_same_schedule(default_records: list[dict]) -> None:
    spec = load_model_spec("armt-tiny").replace(segment_len=16)
    graph = TrainGraph(graph_for_tokens(spec, 64))
    cost = CostModel(with_batch(workload_from_spec(spec), 1), load_hardware_spec("cpu-generic"))
    records = {record["schedule"]: record for record in default_records}
    for name, options in (("sequential", {}), ("diagonal", {}), ("checkpointed", {"memory_budget": 8})):
        schedule = make_train_schedule(graph, name, **options)
        result = simulate_train(schedule, graph, cost).to_dict()
        assert records[name]["steps"] == schedule.num_steps
        assert records[name]["recomputed_cells"] == len(schedule.recomputed)
        assert records[name]["predicted_s"] == result["makespan_s"]
        assert records[name]["predicted_peak_activation_bytes"] == result["peak_activation_bytes"]
    sequential, diagonal = records["sequential"], records["diagonal"]
    assert (sequential["steps"], diagonal["steps"]) == (2 * 16, 2 * (4 + 4 - 1))
    for kind in ("predicted", "measured"):
        speedup = sequential[f"{kind}_s"] / diagonal[f"{kind}_s"]
        assert diagonal[f"{kind}_speedup_vs_sequential"] == pytest.approx(speedup)


def test_checkpointed_gets_the_default_budget_and_holds_less(default_records: list[dict]) -> None:
    records = {record["schedule"]: record for record in default_records}
    checkpointed, sequential = records["checkpointed"], records["sequential"]
    assert checkpointed["memory_budget"] == 8 and sequential["memory_budget"] is None  # 2 x layers
    assert checkpointed["recomputed_cells"] > 0
    assert checkpointed["measured_peak_activation_bytes"] < sequential["measured_peak_activation_bytes"]
    assert checkpointed["predicted_peak_activation_bytes"] < sequential["predicted_peak_activation_bytes"]


def test_options_reach_the_step_and_the_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, *TINY, "--schedule", "sequential", "--schedule", "checkpointed",
                              "--memory-budget", "5", "--truncate", "2", "--batch-size", "2", "--json")
    assert code == 0, err
    sequential, checkpointed = json.loads(out)
    assert (checkpointed["memory_budget"], checkpointed["truncation"], checkpointed["batch_size"]) == (5, 2, 2)
    spec = load_model_spec("armt-tiny").replace(segment_len=16)
    graph = TrainGraph(graph_for_tokens(spec, 64), 2)
    cost = CostModel(with_batch(workload_from_spec(spec), 2), load_hardware_spec("cpu-generic"))
    predicted = simulate_train(make_train_schedule(graph, "checkpointed", memory_budget=5), graph, cost)
    assert checkpointed["predicted_s"] == predicted.makespan_s
    assert checkpointed["measured_speedup_vs_sequential"] == pytest.approx(
        sequential["measured_s"] / checkpointed["measured_s"])


def test_the_table_has_time_speedup_and_memory_columns(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, *TINY, "--schedule", "sequential", "--schedule", "diagonal")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("training step of armt-tiny on cpu (fp32, 1 threads): batch 1 x 64 tokens = 4 "
                               "segments x 4 layers; hardware cpu-generic")
    assert lines[1].split() == ["schedule", "steps", "recomp", "predicted", "measured", "error", "speedup", "pred",
                                "speedup", "meas", "mem", "pred", "mem", "meas", "mem", "error"]
    assert [line.split()[0] for line in lines[2:]] == ["sequential", "diagonal"]
    assert lines[2].split().count("1.00x") == 2  # sequential over itself, predicted and measured


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--schedule", "checkpointed", "--memory-budget", "2"], "memory_budget=2 cells cannot hold one step of 4"),
        (["--schedule", "diagonal", "--memory-budget", "8"], "a memory budget (8 cells) is for 'checkpointed'"),
        (["--schedule", "nope"], "unknown training scheduler 'nope'"),
        (["--schedule", "full-attention"], "--schedule full-attention applies to the forward comparison"),
        (["--devices", "2"], "--devices applies to the forward comparison, not to --train"),
        (["--memory-budget", "0"], "--memory-budget: expected a positive integer, got 0"),
        (["--batch-size", "x"], "--batch-size: expected a positive integer, got 'x'"),
        (["--dtype", "fp64"], "unknown dtype 'fp64'"),
    ],
)
def test_bad_training_input_exits_2_in_one_line(capsys: pytest.CaptureFixture[str], args: list[str],
                                                message: str) -> None:
    code, out, err = run_main(capsys, *TINY, *args)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flag", ["--truncate", "--memory-budget", "--batch-size"])
def test_training_options_without_train_exit_2(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    code, out, err = run_main(capsys, *[arg for arg in TINY if arg != "--train"], flag, "2")
    assert code == 2 and out == ""
    assert f"{flag} applies to a training step: add --train" in err and len(err.strip().splitlines()) == 1


def test_the_guard_refuses_a_step_whose_predicted_memory_does_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    compare_train_module = importlib.import_module("rmtsched.calibrate.compare_train")
    monkeypatch.setattr(compare_train_module, "build_model", lambda *a, **k: pytest.fail("the model was built"))
    monkeypatch.setattr(guard, "available_memory_bytes", lambda: 0.5e9)  # less than the backend's own bytes
    spec = load_model_spec("armt-tiny").replace(segment_len=16)
    with pytest.raises(guard.RequestTooLarge, match=r"training step of armt-tiny on 1 x 64 tokens \(predicted peak"):
        compare_train(spec, load_hardware_spec("cpu-generic"), 64, resolve_target("cpu", "fp32", 1), guard=True)
