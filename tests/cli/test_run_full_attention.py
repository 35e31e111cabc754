"""``rmtsched run --schedule full-attention``: the baseline measured like any schedule, and FLOP/s in every record.

The hash is checked against sha256 of the baseline's hidden states computed here (``full_attention_forward``
collected and hashed with hashlib, not through the run's hashing); the FLOPs against the matmul count of a
LLaMA layer written out from the design notes (projections, MLP, causal QK^T and PV).
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from cli_helpers import run_main

import rmtsched
from rmtsched.backends.torch import build_model
from rmtsched.backends.torch.full_attention import DEFAULT_CHUNK_TOKENS, full_attention_forward
from rmtsched.backends.torch.session import random_token_ids
from rmtsched.sched import available_schedulers
from rmtsched.sim.study import FULL_ATTENTION
from rmtsched.specs.model import load_model_spec

TINY = ["--model", "armt-tiny", "--segment-len", "8", "--mem-tokens", "2"]


def _json_run(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    code, out, err = run_main(capsys, "run", *TINY, "--json", *args)
    assert code == 0, err
    return json.loads(out)


def _matmul_flops(d: int, kv: int, f: int, n: int) -> float:
    """A LLaMA layer's multiply-adds on n causal tokens, x2: QKV, O, gate/up, down, QK^T and PV."""
    projections = 2 * n * (d * (d + 2 * kv) + d * d + d * 2 * f + f * d)
    return projections + 2 * 2 * d * n * (n + 1) / 2


def test_the_baseline_hashes_its_hidden_states_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    record = _json_run(capsys, "--seq-len", "37", "--schedule", FULL_ATTENTION, "--chunk-tokens", "10",
                       "--repeat", "2", "--threads-per-process", "1")
    spec = load_model_spec("armt-tiny").replace(segment_len=8, mem_tokens=2)
    model = build_model(spec, seed=0)
    chunks: list[torch.Tensor] = []
    full_attention_forward(model, random_token_ids(spec, 37, seed=0), chunk_tokens=10,
                           on_output=lambda index, hidden: chunks.append(hidden))
    expected = hashlib.sha256(torch.cat(chunks, dim=1).contiguous().numpy().tobytes()).hexdigest()
    assert record["output_sha256"] == expected
    assert (record["schedule"], record["chunks"], record["chunk_tokens"], record["steps"]) == (FULL_ATTENTION, 4, 10, 4)
    assert record["tokens_per_s"] == pytest.approx(37 / record["wall_s"]) and len(record["wall_s_all"]) == 2
    assert record["peak_memory_bytes"] > 0 and record["nonfinite_outputs"] == 0


def test_the_baseline_record_has_every_field_of_a_schedule_run(capsys: pytest.CaptureFixture[str]) -> None:
    diagonal = _json_run(capsys, "--seq-len", "20", "--schedule", "diagonal")
    baseline = _json_run(capsys, "--seq-len", "20", "--schedule", FULL_ATTENTION)
    assert set(baseline) >= set(diagonal) - {"trace"}
    assert baseline["chunk_tokens"] == DEFAULT_CHUNK_TOKENS and baseline["chunks"] == 1
    assert baseline["output_sha256"] != diagonal["output_sha256"]  # another model: no memory


@pytest.mark.parametrize("schedule", ["diagonal", FULL_ATTENTION])
def test_every_record_has_the_cost_models_flops_and_the_rate_achieved(
    capsys: pytest.CaptureFixture[str], schedule: str
) -> None:
    record = _json_run(capsys, "--seq-len", "40", "--schedule", schedule)
    spec = load_model_spec("armt-tiny")
    d, kv, f = spec.d_model, spec.kv_dim, spec.mlp_dim
    if schedule == FULL_ATTENTION:
        matmuls = spec.num_layers * _matmul_flops(d, kv, f, 40)
    else:  # 5 segments of 8 tokens + 2 memory tokens, plus the memory read (W_q, A) and write: more than this
        matmuls = 5 * spec.num_layers * _matmul_flops(d, kv, f, 10)
    # Elementwise work (norms, rotary, SiLU, softmax) and ARMT's memory add to the matmuls, never half again.
    assert matmuls < record["flops"] < 1.5 * matmuls
    assert record["achieved_flops_per_s"] == pytest.approx(record["flops"] / record["wall_s"])


def test_the_python_api_runs_the_baseline_and_the_text_says_what_ran(capsys: pytest.CaptureFixture[str]) -> None:
    record = rmtsched.run(model="armt-tiny", seq_len=30, schedule=FULL_ATTENTION, chunk_tokens=16, warmup=False)
    assert (record["chunks"], record["segments"]) == (2, None)
    code, out, _ = run_main(capsys, "run", *TINY, "--seq-len", "30", "--schedule", FULL_ATTENTION, "--chunk-tokens",
                            "16")
    assert code == 0
    assert "30 tokens with full attention (no memory) in 2 chunk(s) of 16" in out and "GFLOP/s achieved" in out
    assert out.splitlines()[-1] == f"output_sha256 {record['output_sha256']}"


def test_the_baseline_is_no_scheduler(capsys: pytest.CaptureFixture[str]) -> None:
    assert FULL_ATTENTION not in available_schedulers()
    code, out, _ = run_main(capsys, "verify", "--model", "armt-tiny", "--seq-len", "16", "--json")
    assert code == 0 and FULL_ATTENTION not in {row["schedule"] for row in json.loads(out)["schedules"]}
    code, out, _ = run_main(capsys, "run", "--help")
    words = " ".join(out.split())  # argparse wraps the help
    assert code == 0 and FULL_ATTENTION in words and f"default {DEFAULT_CHUNK_TOKENS}:" in words


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--schedule", FULL_ATTENTION, "--devices", "2"], "devices=2 does not apply to 'full-attention'"),
        (["--schedule", FULL_ATTENTION, "--max-width", "2"], "max_width=2 does not apply"),
        (["--schedule", FULL_ATTENTION, "--trace", "t.json"], "trace=PosixPath('t.json') does not apply"),
        (["--schedule", "diagonal", "--chunk-tokens", "8"], "chunk_tokens 8 applies to schedule 'full-attention' only"),
        (["--schedule", FULL_ATTENTION, "--chunk-tokens", "0"], "expected a positive integer, got 0"),
    ],
)
def test_options_that_do_not_apply_are_one_line_errors(capsys: pytest.CaptureFixture[str], args: list[str],
                                                       message: str) -> None:
    code, out, err = run_main(capsys, "run", *TINY, "--seq-len", "16", *args)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1
