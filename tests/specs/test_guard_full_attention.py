"""The size guard on the full-attention baseline (its KV cache and N^2 work), and before any seeded model is built."""

from __future__ import annotations

import pytest
from cli_helpers import run_main

from rmtsched.specs.guard import full_attention_estimate, model_bytes, run_estimate
from rmtsched.specs.model import load_model_spec


def test_the_kv_cache_and_the_quadratic_work_are_counted() -> None:
    spec = load_model_spec("armt-llama-1b")
    short, long = (full_attention_estimate(spec, n, "bf16", 2048) for n in (32_768, 131_072))
    # K and V of every token in every layer: 2 N kv_dim L elements, 2 bytes each in bf16.
    cache = 2 * 131_072 * spec.kv_dim * spec.num_layers * 2
    assert long.memory_bytes > model_bytes(spec, 2) + cache
    assert long.memory_bytes - short.memory_bytes > 0.75 * cache  # the cache (and scores) grow with N
    assert 4 * long.seconds / short.seconds > 4 * 4 * 0.5  # the attention's N^2 dominates: far above 4x
    assert long.cells == spec.num_layers * 64
    # The baseline costs more than the same model with memory on the same tokens (ARMT: linear in N).
    assert long.seconds > 2 * run_estimate(spec, 131_072, "bf16").seconds


@pytest.mark.parametrize(("schedule", "what"), [("full-attention", "armt-llama-8b with full attention on 10,000,000"),
                                              ("diagonal", "armt-llama-8b on 10,000,000")])
def test_a_run_that_cannot_fit_is_refused_before_its_model_is_built(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, schedule: str, what: str
) -> None:
    import rmtsched.api.running as running

    monkeypatch.setattr(running, "load_config", lambda *a, **k: pytest.fail("an 8B model was built"))
    code, out, err = run_main(capsys, "run", "--model", "armt-llama-8b", "--seq-len", "10000000", "--schedule",
                              schedule)
    assert code == 2 and out == ""
    assert "request too" in err and what in err


def test_verify_refuses_before_building_a_seeded_model(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import rmtsched.api.verification as verification

    monkeypatch.setattr(verification, "load_config", lambda *a, **k: pytest.fail("an 8B model was built"))
    code, out, err = run_main(capsys, "verify", "--model", "armt-llama-8b", "--seq-len", "10000000")
    assert code == 2 and out == "" and "request too" in err
