"""The torchrun entry point: the documented command runs the same computation as the reference loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dist_toy_model import build_toy_from_spec, reference_run

from rmtsched.backends.distributed import outputs_sha256
from rmtsched.backends.distributed.worker import main
from rmtsched.specs.model import ModelSpec

HERE = Path(__file__).parent
SPEC = dict(name="toy", family="rmt", num_layers=4, d_model=8, num_heads=1, num_kv_heads=1, mlp_dim=8,
            vocab_size=37, segment_len=5, mem_tokens=2)  # fmt: skip


def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(SPEC))
    return path


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_torchrun_two_ranks_match_the_reference(tmp_path):
    command = [
        str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc-per-node", "2",
        "-m", "rmtsched.backends.distributed.worker", "--model", str(spec_file(tmp_path)), "--seq-len", "23",
        "--builder", "dist_toy_model:build_toy_from_spec", "--dtype", "fp64", "--seed", "4", "--threads", "1",
        "--timeout", "20", "--json",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=100, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    spec = ModelSpec.from_dict(SPEC)
    model = build_toy_from_spec(spec, seed=4, dtype=torch.float64, device=torch.device("cpu"))
    inputs = torch.randint(37, (1, 23), generator=torch.Generator().manual_seed(4))
    outputs, _ = reference_run(model, inputs)
    assert result["output_sha256"] == outputs_sha256(outputs)
    assert result["devices"] == 2 and [rank["layers"] for rank in result["ranks"]] == [[0, 2], [2, 4]]


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
