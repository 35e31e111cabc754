"""The size guard: estimates that grow with the request, a refusal that quotes them, ``--force`` to override."""

from __future__ import annotations

import pytest
from cli_helpers import run_main

from rmtsched.specs import guard
from rmtsched.specs.guard import RequestTooLarge, check_fits, grid_estimate, model_bytes, run_estimate
from rmtsched.specs.model import load_model_spec

# Meta's published parameter count of Llama-3-8B (its model card and config: 32 layers, d 4096, GQA 8 heads,
# MLP 14336, vocabulary 128256, untied head); rmt-llama-8b is that model plus 16 memory embeddings.
LLAMA3_8B_PARAMS = 8_030_261_248


def test_model_bytes_match_the_published_llama_3_8b_count() -> None:
    spec = load_model_spec("rmt-llama-8b")
    assert model_bytes(spec, 1) == LLAMA3_8B_PARAMS + spec.mem_tokens * spec.d_model
    assert model_bytes(spec, 2) == 2 * model_bytes(spec, 1)
    # ARMT adds W_mq, W_mk, W_mv, W_mb and the state (A, z) to every layer.
    assert model_bytes(load_model_spec("armt-llama-8b"), 1) > model_bytes(spec, 1)


def test_estimates_grow_with_the_request() -> None:
    spec = load_model_spec("armt-small")
    small, big = (run_estimate(spec, n, "fp32") for n in (4096, 40960))
    assert big.cells == 10 * small.cells and big.seconds == pytest.approx(10 * small.seconds)
    assert big.memory_bytes > small.memory_bytes
    assert run_estimate(spec, 4096, "fp64").memory_bytes > small.memory_bytes
    assert run_estimate(spec, 4096, "fp32", kept_outputs=2).memory_bytes > small.memory_bytes
    assert grid_estimate("g", 16, 1000, schedules=3).seconds == pytest.approx(3 * grid_estimate("g", 16, 1000).seconds)


def test_a_request_over_the_memory_is_refused_with_the_estimate() -> None:
    estimate = grid_estimate("a 1,000 x 1,000,000 schedule", 1000, 1_000_000)
    with pytest.raises(RequestTooLarge, match=r"1,000,000,000 cells, about 500\.2 GB of memory .* only 8\.0 GB"):
        check_fits(estimate, available_bytes=8e9)
    assert check_fits(estimate, available_bytes=8e9, force=True) is estimate
    assert check_fits(grid_estimate("small", 4, 8), available_bytes=8e9).cells == 32


def test_a_request_longer_than_the_limit_is_refused() -> None:
    spec = load_model_spec("armt-llama-8b")
    with pytest.raises(RequestTooLarge, match="request too long for this machine: running armt-llama-8b"):
        check_fits(run_estimate(spec, 100_000_000, "bf16"), available_bytes=1e15)


def test_unknown_dtype_is_named() -> None:
    with pytest.raises(guard.RmtschedError, match="unknown dtype 'fp8'"):
        run_estimate(load_model_spec("armt-tiny"), 100, "fp8")


@pytest.mark.parametrize(
    "argv",
    [
        ["schedule", "--layers", "100000", "--segments", "100000"],
        ["simulate", "--model", "armt-small", "--seq-len", "10000000000", "--hardware", "cpu-generic",
         "--schedule", "diagonal"],
        ["run", "--model", "armt-tiny", "--seq-len", "10000000000", "--schedule", "diagonal"],
        ["verify", "--model", "armt-tiny", "--seq-len", "10000000000"],
        ["compare", "--model", "armt-tiny", "--seq-len", "10000000000", "--hardware", "cpu-generic"],
        ["generate", "--model", "armt-tiny", "--seq-len", "10000000000"],
        ["generate", "--model", "armt-tiny", "--seq-len", "64", "--max-new-tokens", "1000000000000"],
    ],
    ids=lambda argv: "-".join(argv[:1] + argv[-1:]),
)
def test_every_command_refuses_what_cannot_fit(capsys, argv: list[str]) -> None:
    code, out, err = run_main(capsys, *argv)
    assert (code, out) == (2, "")
    assert "request too large for this machine" in err and "cells" in err and "--force" in err
    assert err.count("\n") == 1


def test_force_overrides_the_guard(capsys, monkeypatch) -> None:
    monkeypatch.setattr(guard, "available_memory_bytes", lambda: 1.0)
    assert run_main(capsys, "schedule", "--layers", "2", "--segments", "2")[0] == 2
    code, out, _ = run_main(capsys, "schedule", "--layers", "2", "--segments", "2", "--force")
    assert code == 0 and "diagonal: 3 steps" in out


def test_generation_estimate_counts_the_decoding_steps() -> None:
    spec = load_model_spec("armt-small")
    short, long = guard.generate_estimate(spec, 4096, 10, "fp32"), guard.generate_estimate(spec, 4096, 10_000, "fp32")
    assert long.memory_bytes > short.memory_bytes
    # each new token runs every layer once (about 0.6 ms each here): 10,000 tokens take minutes, not milliseconds
    assert long.seconds - short.seconds >= 9_990 * spec.num_layers * guard.DECODE_SECONDS_PER_LAYER


@pytest.mark.parametrize("command", ["run", "verify", "generate"])
def test_backend_commands_check_the_run_devices_free_memory(capsys, monkeypatch, command: str) -> None:
    """The guard asks the run's device for its free memory (a GPU's on CUDA), not always the host."""
    asked: list[str] = []

    def tiny_device(device: str) -> float:
        asked.append(device)
        return 1.0

    monkeypatch.setattr("rmtsched.api.model.free_memory_bytes", tiny_device)
    schedule = ["--schedule", "diagonal"] if command == "run" else []
    code, _, err = run_main(capsys, command, "--model", "armt-tiny", "--seq-len", "64", *schedule)
    assert code == 2 and "request too large for this machine" in err
    assert asked and set(asked) == {"cpu"}
