"""The torchrun entry point: the documented command computes what ``rmtsched run`` computes, bit for bit."""

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
from rmtsched.backends.distributed.worker import main
from rmtsched.backends.torch.threads import intra_op_threads
from rmtsched.cli.main import main as cli_main
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
        "-m", "rmtsched.backends.distributed.worker", *common, "--threads", "1", "--timeout", "20", "--json",
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
    """``--builder`` takes any MODULE:FUNCTION; one rank runs in-process over a file:// rendezvous."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
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


def test_worker_names_a_missing_builder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    argv = ["--model", str(spec_file(tmp_path)), "--seq-len", "10", "--builder", "no_such_module:build"]
    assert main(argv) == 2
    assert "cannot load model builder 'no_such_module:build'" in capsys.readouterr().err


def test_worker_refuses_more_ranks_than_layers(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "5")
    argv = ["--model", str(spec_file(tmp_path)), "--seq-len", "10", "--builder", "dist_toy_model:build_toy_from_spec"]
    assert main(argv) == 2
    assert "cannot split 4 layers into 5" in capsys.readouterr().err
