"""One run configuration: the same option group in every parser that runs a model, read back into one frozen
``RunConfig``; its torch-free name lists agree with the backend's."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from rmtsched.backends.torch.models import DTYPES
from rmtsched.backends.torch.rowmm import MODES
from rmtsched.cli.args import add_run_arguments, run_config
from rmtsched.cli.main import build_parser
from rmtsched.cli.torchrun_worker import build_parser as worker_parser
from rmtsched.errors import SpecError
from rmtsched.specs.run import DEVICE_DTYPES, DTYPE_NAMES, GEMM_MODES, RunConfig

SHARED = {"--model", "--seq-len", "--segment-len", "--mem-tokens", "--armt-variant", "--device", "--dtype", "--seed",
          "--gemm"}


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


def test_the_torch_free_name_lists_match_the_backend() -> None:
    assert GEMM_MODES == MODES
    assert set(DTYPE_NAMES) == set(DTYPES)
    assert {name for names in DEVICE_DTYPES.values() for name in names} == set(DTYPE_NAMES)


@pytest.mark.parametrize("command", ["run", "verify", "compare", "generate"])
def test_every_command_that_runs_a_model_has_the_group(command: str) -> None:
    assert options(subparser(command)) >= SHARED


def test_simulate_has_the_group_without_what_only_a_real_run_needs() -> None:
    real_run_only = {"--device", "--dtype", "--seed", "--gemm"}
    assert options(subparser("simulate")) >= SHARED - real_run_only
    assert not real_run_only & options(subparser("simulate"))


def test_run_and_verify_take_checkpoints_and_inputs_the_worker_does_not() -> None:
    extra = {"--checkpoint", "--init-memory", "--tokens", "--text"}
    assert extra <= options(subparser("run")) and extra <= options(subparser("verify"))
    assert options(worker_parser()) >= SHARED and not extra & options(worker_parser())
    assert not extra & options(subparser("compare"))


def test_run_config_reads_back_every_field() -> None:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    args = parser.parse_args(["--checkpoint", "ck", "--tokens", "ids.npy", "--seq-len", "9", "--segment-len", "4",
                              "--mem-tokens", "0", "--armt-variant", "normalized", "--init-memory", "seed",
                              "--dtype", "fp64", "--seed", "5", "--gemm", "rows"])
    config = run_config(args)
    assert config == RunConfig(checkpoint="ck", tokens="ids.npy", seq_len=9, segment_len=4, mem_tokens=0,
                               armt_variant="normalized", init_memory="seed", dtype="fp64", seed=5, gemm="rows")
    assert config.spec_overrides == {"segment_len": 4, "mem_tokens": 0, "armt_variant": "normalized"}
    assert config.to_dict()["checkpoint"] == "ck" and dataclasses.is_dataclass(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # type: ignore[misc]


def test_worker_options_become_a_config() -> None:
    args = worker_parser().parse_args(["--model", "armt-tiny", "--seq-len", "64", "--armt-variant", "normalized"])
    assert run_config(args).spec_overrides == {"armt_variant": "normalized"}
    with pytest.raises(SystemExit):
        worker_parser().parse_args(["--model", "armt-tiny", "--seq-len", "0"])


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"device": "tpu"}, "unknown device 'tpu'"), ({"dtype": "fp8"}, "unknown dtype 'fp8'"),
     ({"gemm": "fast"}, "unknown gemm 'fast'"), ({"seed": -1}, "seed must be a non-negative integer, got -1"),
     ({"segment_len": True}, "segment_len must be a positive integer, got True")],
)
def test_bad_values_name_themselves(fields: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        RunConfig(model="armt-tiny", seq_len=4, **fields)
