"""Values the backend would turn into garbage or a crash: a NaN weight in a checkpoint, 100000 threads."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import safetensors.torch
import torch
from cli_helpers import run_main

from rmtsched.backends.torch import build_model
from rmtsched.backends.torch.checkpoint import load_checkpoint, save_checkpoint
from rmtsched.backends.torch.threads import MAX_INTRA_OP_THREADS, intra_op_threads
from rmtsched.errors import CheckpointError, SpecError
from rmtsched.specs.model import load_model_spec

SPEC = load_model_spec("armt-tiny")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_checkpoint_tensor_is_refused_by_name(tmp_path: Path, capsys, value: float) -> None:
    save_checkpoint(build_model(SPEC, seed=0), tmp_path)
    path = tmp_path / "model.safetensors"
    tensors = dict(safetensors.torch.load_file(str(path)))
    name = sorted(tensors)[1]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[3] = value
    safetensors.torch.save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=rf"tensor '{name}' holds 1 non-finite value\(s\)"):
        load_checkpoint(tmp_path)
    code, out, err = run_main(capsys, "run", "--model", "armt-tiny", "--checkpoint", str(tmp_path), "--seq-len",
                              "100", "--schedule", "diagonal")
    assert (code, out) == (2, "") and "non-finite" in err and err.count("\n") == 1


def test_a_finite_checkpoint_still_loads(tmp_path: Path) -> None:
    model = build_model(SPEC, seed=0)
    save_checkpoint(model, tmp_path)
    assert all(torch.equal(load_checkpoint(tmp_path).params[k], v) for k, v in model.params.items())


@pytest.mark.parametrize("count", [0, -1, MAX_INTRA_OP_THREADS + 1, 100000, True])
def test_absurd_thread_counts_are_refused_before_torch_sees_them(count: int) -> None:
    before = torch.get_num_threads()
    message = f"thread count must be an integer from 1 to {MAX_INTRA_OP_THREADS}"
    with pytest.raises(SpecError, match=message), intra_op_threads(count):
        pytest.fail("the block ran")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("command", [["calibrate", "--quick"], ["compare", "--model", "armt-tiny", "--seq-len", "64",
                                                                  "--hardware", "cpu-generic"]])
def test_cli_refuses_100000_threads_in_one_line(capsys, command: list[str]) -> None:
    code, out, err = run_main(capsys, *command, "--threads", "100000")
    assert (code, out) == (2, "") and "got 100000" in err and err.count("\n") == 1
