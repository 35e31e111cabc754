"""``rmtsched run --devices P``: P local processes, the single-process record plus per-rank busy times.

The hashes must not depend on the intra-op thread count either: a 1-thread rank is compared with a
2-thread single process too (raw MKL rounds some small-row GEMMs differently at 1 and 2 threads;
``RowMatmul`` runs those layouts with one thread).
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import re
import statistics

import pytest
import torch
from cli_helpers import run_main

TINY = ["--model", "armt-tiny", "--segment-len", "8", "--mem-tokens", "2"]  # 4 layers


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    return run_main(capsys, "run", *args)


def json_run(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    code, out, err = run_cli([*TINY, "--json", *args], capsys)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.distributed
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("dtype", "procs", "repeat"), [("fp32", 2, 2), ("fp64", 4, 1)])
def test_processes_hash_equals_the_sequential_run_with_the_same_threads(dtype, procs, repeat, capsys) -> None:
    common = ["--seq-len", "37", "--dtype", dtype, "--threads-per-process", "1"]  # 5 segments, the last of 5 tokens
    threads = torch.get_num_threads()
    single = json_run([*common, "--schedule", "sequential"], capsys)
    assert torch.get_num_threads() == threads  # the single-process run restored the caller's thread count
    multi = json_run([*common, "--schedule", "pipelined", "--devices", str(procs), "--repeat", str(repeat)], capsys)
    assert multi["output_sha256"] == single["output_sha256"]
    assert single["processes"] == 1 and single["threads_per_process"] == 1 and "ranks" not in single
    assert set(single) <= set(multi)  # the same record, plus the per-rank fields
    assert multi["processes"] == multi["devices"] == procs and multi["threads_per_process"] == 1
    assert multi["schedule"] == "pipelined" and multi["backend"] == "gloo" and multi["dtype"] == dtype
    assert (multi["segments"], multi["layers"], multi["seq_len"]) == (5, 4, 37)
    assert len(multi["wall_s_all"]) == repeat
    assert multi["wall_s"] == pytest.approx(statistics.median(multi["wall_s_all"]))
    assert multi["tokens_per_s"] == pytest.approx(37 / multi["wall_s"]) and multi["peak_memory_bytes"] > 0
    ranks = multi["ranks"]
    assert [rank["rank"] for rank in ranks] == list(range(procs))
    stages = [tuple(rank["layers"]) for rank in ranks]
    assert stages[0][0] == 0 and stages[-1][1] == 4 and all(a[1] == b[0] for a, b in itertools.pairwise(stages))
    assert all(0 < rank["busy_s"] <= rank["wall_s"] <= multi["wall_s"] * 1.0001 for rank in ranks)
    assert 0 <= multi["bubble_fraction"] < 1


@pytest.mark.distributed
@pytest.mark.timeout(120)
@pytest.mark.parametrize("dtype", ["fp32", "fp64"])
def test_one_thread_ranks_match_a_two_thread_single_process(dtype, capsys) -> None:
    common = ["--seq-len", "37", "--dtype", dtype]
    single = json_run([*common, "--schedule", "sequential", "--threads-per-process", "2"], capsys)
    multi = json_run([*common, "--schedule", "pipelined", "--devices", "2", "--threads-per-process", "1"], capsys)
    assert (single["threads_per_process"], multi["threads_per_process"]) == (2, 1)
    assert multi["output_sha256"] == single["output_sha256"]


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_text_output_prints_one_busy_line_per_rank(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli([*TINY, "--seq-len", "24", "--schedule", "pipelined", "--devices", "2"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert "on 2 processes (gloo" in lines[0] and "bubble" in out
    rank_lines = [line for line in lines if re.match(r"\s+rank \d: layers \d\.\.\d, busy \d+\.\d+ s", line)]
    assert len(rank_lines) == 2 and "layers 0..1" in rank_lines[0] and "layers 2..3" in rank_lines[1]
    assert re.fullmatch(r"output_sha256 [0-9a-f]{64}", lines[-1])


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_a_bad_checkpoint_is_one_line_and_exit_2_before_any_rank_starts(tmp_path, capsys) -> None:
    """The launcher reads the checkpoint's spec itself, so an empty directory fails before any process starts
    (a rank that fails mid-run is named with its step: tests/backends/distributed/test_distributed_faults.py)."""
    args = [*TINY, "--seq-len", "24", "--schedule", "pipelined", "--devices", "2", "--checkpoint", str(tmp_path)]
    code, out, err = run_cli(args, capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "holds none of" in err
    assert multiprocessing.active_children() == []


def test_more_processes_than_layers_fails_before_starting_any(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli([*TINY, "--seq-len", "24", "--schedule", "pipelined", "--devices", "5"], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "4 layers" in err and "5" in err
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("value", ["0", "-3", "abc", "nan", "inf"])
def test_timeout_must_be_positive_seconds(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = [*TINY, "--seq-len", "24", "--schedule", "pipelined", "--devices", "2", "--timeout", value]
    code, out, err = run_cli(args, capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--timeout" in err and "expected a positive" in err and value in err


def test_threads_per_process_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    args = [*TINY, "--seq-len", "24", "--schedule", "pipelined", "--devices", "2", "--threads-per-process", "0"]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "--threads-per-process: expected a positive integer, got 0" in err


def test_in_process_and_one_device_runs_stay_in_this_process(capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--seq-len", "24", "--schedule", "pipelined", "--threads-per-process", "1"]
    here = json_run([*common, "--devices", "2", "--in-process", "--timeout", "0.5"], capsys)
    one = json_run([*common, "--devices", "1"], capsys)
    assert here["processes"] == one["processes"] == 1 and "ranks" not in here and "ranks" not in one
    assert here["devices"] == 2 and one["devices"] == 1 and here["output_sha256"] == one["output_sha256"]
