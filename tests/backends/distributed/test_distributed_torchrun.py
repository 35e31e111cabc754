"""The torchrun entry point: the documented command computes what ``rmtsched run`` computes, bit for bit, and
refuses bad input like ``rmtsched run`` does: one line, exit 2 (bad input) or 3 (a failed run), no traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dist_toy_model import build_toy_from_spec, reference_run

from rmtsched.backends.distributed import outputs_sha256
from rmtsched.backends.torch.threads import intra_op_threads
from rmtsched.cli.main import main as cli_main
from rmtsched.cli.torchrun_worker import main
from rmtsched.specs.model import ModelSpec

SPEC = dict(name="tiny-rmt", family="rmt", num_layers=4, d_model=16, num_heads=2, num_kv_heads=1, mlp_dim=32,
            vocab_size=37, segment_len=5, mem_tokens=2, mem_key_dim=4)  # fmt: skip


def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(SPEC))
    return path


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_torchrun_two_ranks_hash_like_rmtsched_run(tmp_path, capsys):
    spec_path = spec_file(tmp_path)
    common = ["--model", str(spec_path), "--seq-len", "23", "--dtype", "fp64", "--seed", "4"]
    command = [
        str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc-per-node", "2",
        "-m", "rmtsched.cli.torchrun_worker", *common, "--threads", "1", "--timeout", "20", "--json",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2 and [rank["layers"] for rank in result["ranks"]] == [[0, 2], [2, 4]]
    assert (result["processes"], result["threads_per_process"]) == (2, 1)

    with intra_op_threads(1):  # the ranks' thread count
        assert cli_main(["run", *common, "--schedule", "sequential", "--json"]) == 0
    single = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["output_sha256"] == single["output_sha256"]
    assert {"model", "layers", "seq_len", "segments", "wall_s", "tokens_per_s", "peak_memory_bytes"} <= result.keys()


def test_worker_runs_a_plug_in_builder_in_one_rank(tmp_path, capsys, monkeypatch):
    """``--builder`` takes any MODULE:FUNCTION; one rank runs in-process."""
    torchrun_environment(monkeypatch)
    argv = ["--model", str(spec_file(tmp_path)), "--seq-len", "23", "--seed", "4", "--dtype", "fp64",
            "--builder", "dist_toy_model:build_toy_from_spec", "--json"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    spec = ModelSpec.from_dict(SPEC)
    model = build_toy_from_spec(spec, seed=4, dtype=torch.float64, device=torch.device("cpu"))
    outputs, _ = reference_run(model, torch.randint(37, (1, 23), generator=torch.Generator().manual_seed(4)))
    assert result["output_sha256"] == outputs_sha256(outputs)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun_environment(monkeypatch, rank="0", world_size="1", port=None, **others) -> None:
    """What torchrun sets for a worker; a value of None leaves that variable unset."""
    values = {"RANK": rank, "WORLD_SIZE": world_size, "MASTER_ADDR": "127.0.0.1", "LOCAL_RANK": None}
    values |= {"MASTER_PORT": str(port if port is not None else free_port()), **others}
    for name, value in values.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def run_worker(argv: list[str], capsys) -> tuple[int, str]:
    """(exit code, stderr) of one in-process worker; it must be one line and never a traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return code, err


def test_worker_names_a_missing_builder(tmp_path, capsys, monkeypatch):
    torchrun_environment(monkeypatch)
    argv = ["--model", str(spec_file(tmp_path)), "--seq-len", "10", "--builder", "no_such_module:build"]
    code, err = run_worker(argv, capsys)
    assert code == 2 and "cannot load model builder 'no_such_module:build'" in err


def test_worker_refuses_more_ranks_than_layers(tmp_path, capsys, monkeypatch):
    torchrun_environment(monkeypatch, world_size="5")
    argv = ["--model", str(spec_file(tmp_path)), "--seq-len", "10", "--builder", "dist_toy_model:build_toy_from_spec"]
    code, err = run_worker(argv, capsys)
    assert code == 2 and "cannot split 4 layers into 5" in err


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"RANK": None}, "environment variable(s) RANK not set"),
        ({"WORLD_SIZE": None, "MASTER_ADDR": None}, "environment variable(s) WORLD_SIZE, MASTER_ADDR not set"),
        ({"MASTER_PORT": ""}, "environment variable(s) MASTER_PORT not set"),
        ({"RANK": "abc"}, "RANK='abc': expected an integer in [0, 0]"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK='2': expected an integer in [0, 1]"),
        ({"RANK": "-1"}, "RANK='-1': expected an integer in [0, 0]"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE='0': expected an integer >= 1"),
        ({"MASTER_PORT": "70000"}, "MASTER_PORT='70000': expected an integer in [1, 65535]"),
        ({"LOCAL_RANK": "x"}, "LOCAL_RANK='x': expected an integer >= 0"),
    ],
)
def test_worker_refuses_a_bad_torchrun_environment(environment, message, tmp_path, capsys, monkeypatch):
    torchrun_environment(monkeypatch, **{"RANK": "0", "WORLD_SIZE": "1", **environment})
    code, err = run_worker(["--model", str(spec_file(tmp_path)), "--seq-len", "10"], capsys)
    assert code == 2 and message in err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--seq-len", "0"], "--seq-len: expected a positive integer, got 0"),
        (["--seq-len", "10", "--segment-len", "-2"], "--segment-len: expected a positive integer, got -2"),
        (["--seq-len", "10", "--mem-tokens", "-1"], "--mem-tokens: expected a non-negative integer, got -1"),
        (["--seq-len", "10", "--threads", "0"], "--threads: expected a positive integer, got 0"),
        (["--seq-len", "10", "--repeat", "0"], "--repeat: expected a positive integer, got 0"),
        (["--seq-len", "10", "--timeout", "nan"], "--timeout: expected a positive, finite number of seconds, got nan"),
        (["--seq-len", "10", "--dtype", "bf16"], "dtype bf16 is not supported on cpu"),
        (["--seq-len", "10", "--schedule", "no-such-scheduler"], "no-such-scheduler"),
    ],
)
def test_worker_refuses_bad_options_like_rmtsched_run(options, message, tmp_path, capsys, monkeypatch):
    torchrun_environment(monkeypatch)
    code, err = run_worker(["--model", str(spec_file(tmp_path)), *options], capsys)
    assert code == 2 and message in err


def test_worker_refuses_a_malformed_schedule_file_and_an_unknown_model(tmp_path, capsys, monkeypatch):
    torchrun_environment(monkeypatch)
    schedule = tmp_path / "schedule.json"
    schedule.write_bytes(b"\xff{not json")
    code, err = run_worker(
        ["--model", str(spec_file(tmp_path)), "--seq-len", "10", "--schedule", str(schedule)], capsys
    )
    assert code == 2 and "schedule.json" in err
    code, err = run_worker(["--model", "no-such-model", "--seq-len", "10"], capsys)
    assert code == 2 and "no-such-model" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_worker_refuses_cuda_without_a_gpu(tmp_path, capsys, monkeypatch):
    torchrun_environment(monkeypatch)
    code, err = run_worker(["--model", str(spec_file(tmp_path)), "--seq-len", "10", "--device", "cuda"], capsys)
    assert code == 2 and "no CUDA device" in err


@pytest.mark.distributed
def test_worker_whose_port_is_taken_fails_in_one_line_with_exit_3(tmp_path, capsys, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        torchrun_environment(monkeypatch, port=port)
        code, err = run_worker(["--model", str(spec_file(tmp_path)), "--seq-len", "10", "--timeout", "5"], capsys)
    assert code == 3 and f"could not join the process group at 127.0.0.1:{port}" in err and "EADDRINUSE" in err


@pytest.mark.distributed
def test_worker_whose_step_raises_names_rank_and_step_with_exit_3(tmp_path, capsys, monkeypatch):
    torchrun_environment(monkeypatch)
    argv = ["--model", str(spec_file(tmp_path)), "--seq-len", "23", "--builder",
            "dist_toy_model:build_failing_toy_from_spec"]  # fmt: skip
    code, err = run_worker(argv, capsys)
    assert code == 3 and "rank 0 failed at step 1" in err and "injected failure at cell (1, 0)" in err
