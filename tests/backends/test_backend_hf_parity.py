"""Parity with Hugging Face: with memory switched off, one ARMT segment equals ``transformers.LlamaModel``, and its
logits equal ``LlamaForCausalLM``'s (also with llama3 rotary scaling and tied embeddings).

Memory off means M = 0 (no memory tokens, no write) and a zero associative read: A and z start at zero,
so the read adds ``0 / (0 + 1e-5)``, an exact 0, in the first segment; the seeded memory weights never
matter. One segment of T tokens (T = the whole input) runs through the executor; ``segment_output`` applies
the final RMSNorm, so it compares with ``last_hidden_state`` (which HF also returns normalised).

Tolerances on the max abs difference (outputs ~1-4 in size; measured on this CPU, torch 2.13, transformers
5.24: fp32 ~2e-6, fp64 as shipped ~7e-7, fp64 full precision 3e-15):
* fp32, HF as shipped (eager or SDPA attention): 1e-5 (logits, ~10x larger: 1e-4).
* fp64, HF as shipped: 1e-5, because HF computes RMSNorm and the RoPE tables in fp32 even for fp64
  models (and eager attention's softmax too); rmtsched computes them in fp64.
* fp64 with HF's RMSNorm and RoPE patched to full precision (``checkpoint_fixtures.full_precision_hf``),
  SDPA attention: 1e-12 (logits 1e-11).
Both use the rotate-half RoPE convention (``kernels.rotary_apply``), so weights load without permuting.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from checkpoint_fixtures import LLAMA3_ROPE, full_precision_hf, llama_config, tiny_llama, transformers

from rmtsched.backends.torch import execute
from rmtsched.backends.torch.checkpoint import load_model
from rmtsched.sched import build_cell_graph, make_schedule

__all__ = ["full_precision_hf"]  # a fixture the tests below request by name

SEQ_LEN = 23


def armt_model(directory: Path, dtype: torch.dtype, seq_len: int, bare: bool = False):
    """The checkpoint as an ARMT with memory off (M = 0) and one segment of the whole input.

    ``bare``: a LlamaModel save has no LM head, so the head is tied to the embeddings (hidden states do not
    depend on it)."""
    overrides = {"segment_len": seq_len, "mem_tokens": 0, "mem_key_dim": 8, **({"tie_word_embeddings": True} if bare
                                                                               else {})}
    return load_model(directory, spec_overrides=overrides, init_memory="seed", dtype=dtype)


def armt_output(directory: Path, dtype: torch.dtype, ids: torch.Tensor, bare: bool = True) -> torch.Tensor:
    """One segment of the whole input through the executor, memory off (M = 0)."""
    model = armt_model(directory, dtype, ids.shape[1], bare)
    graph = build_cell_graph(model.spec.num_layers, segment_tokens=(ids.shape[1],), rule=model.spec.dependency_rule)
    result = execute(model, ids, make_schedule(graph, "sequential"))
    assert result.outputs is not None and len(result.outputs) == 1
    return result.outputs[0]


def hf_output(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if isinstance(model, transformers.LlamaForCausalLM):
            return model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        return model(input_ids=ids).last_hidden_state


def compare(tmp_path: Path, attn: str, dtype: torch.dtype, causal_lm: bool = False, rope: dict | None = None) -> float:
    model = tiny_llama(llama_config(attn, rope=rope), dtype, causal_lm)
    model.save_pretrained(tmp_path, safe_serialization=True)
    ids = torch.randint(0, 100, (2, SEQ_LEN), generator=torch.Generator().manual_seed(1))
    ours, theirs = armt_output(tmp_path, dtype, ids, bare=not causal_lm), hf_output(model, ids)
    assert ours.shape == theirs.shape == (2, SEQ_LEN, 32) and ours.dtype == theirs.dtype == dtype
    return (ours - theirs).abs().max().item()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_segment_without_memory_equals_hf_llama(tmp_path: Path, attn: str, dtype: torch.dtype) -> None:
    assert compare(tmp_path, attn, dtype) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_llama3_rope_hidden_states_equal_hf_llama(tmp_path: Path, dtype: torch.dtype) -> None:
    assert compare(tmp_path, "sdpa", dtype, rope=LLAMA3_ROPE) <= 1e-5


@pytest.mark.usefixtures("full_precision_hf")
def test_llama3_rope_fp64_matches_full_precision_hf_to_round_off(tmp_path: Path) -> None:
    assert compare(tmp_path, "sdpa", torch.float64, rope=LLAMA3_ROPE) <= 1e-12


def test_causal_lm_checkpoint_loads_and_matches(tmp_path: Path) -> None:
    """``LlamaForCausalLM`` saves with a ``model.`` prefix and an ``lm_head``; both are handled."""
    assert compare(tmp_path, "sdpa", torch.float32, causal_lm=True) <= 1e-5


@pytest.mark.usefixtures("full_precision_hf")
def test_fp64_matches_full_precision_hf_to_round_off(tmp_path: Path) -> None:
    assert compare(tmp_path, "sdpa", torch.float64) <= 1e-12


def test_parity_is_sensitive_to_a_weight_mix_up(tmp_path: Path) -> None:
    """The tolerance is far below what a mapping error costs: swapping gate and up shows at once."""
    model = tiny_llama(llama_config("sdpa"), torch.float32, causal_lm=False)
    model.save_pretrained(tmp_path, safe_serialization=True)
    ids = torch.randint(0, 100, (1, SEQ_LEN), generator=torch.Generator().manual_seed(1))
    mlp = model.layers[1].mlp
    with torch.no_grad():
        gate = mlp.gate_proj.weight.clone()
        mlp.gate_proj.weight.copy_(mlp.up_proj.weight)
        mlp.up_proj.weight.copy_(gate)
    assert (armt_output(tmp_path, torch.float32, ids) - hf_output(model, ids)).abs().max().item() > 1e-2


def test_sharded_bf16_checkpoint_loads_cast_to_fp32(tmp_path: Path) -> None:
    """HF's own sharded save (index + shards) in bf16, loaded as fp32, equals the fp32 model with the same
    (bf16-rounded) weights. The bf16 copy is only saved: casting a module also rounds its RoPE buffer."""
    model = tiny_llama(llama_config("sdpa"), torch.float32, causal_lm=False)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.bfloat16().float())
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(tmp_path, safe_serialization=True, max_shard_size="20KB")
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ids = torch.randint(0, 100, (1, SEQ_LEN), generator=torch.Generator().manual_seed(1))
    assert (armt_output(tmp_path, torch.float32, ids) - hf_output(model, ids)).abs().max().item() <= 1e-5


# -- logits: LlamaForCausalLM with llama3 rotary scaling and tied embeddings -----------------------------------


def compare_logits(tmp_path: Path, dtype: torch.dtype, rope: dict | None, tie: bool, seq_len: int = SEQ_LEN) -> float:
    model = tiny_llama(llama_config("sdpa", rope=rope, tie=tie), dtype, causal_lm=True)
    model.save_pretrained(tmp_path, safe_serialization=True)
    ours_model = armt_model(tmp_path, dtype, seq_len)
    assert ours_model.spec.tie_word_embeddings == tie
    assert ours_model.spec.rope_type == ("default" if rope is None else rope["rope_type"])
    assert ours_model.weight_sources.get("lm_head") == ("tied" if tie else "checkpoint")
    ids = torch.randint(0, 100, (2, seq_len), generator=torch.Generator().manual_seed(1))
    graph = build_cell_graph(ours_model.spec.num_layers, segment_tokens=(seq_len,), rule="layer_local")
    ours = ours_model.logits(execute(ours_model, ids, make_schedule(graph, "sequential")).outputs[0])
    with torch.no_grad():
        theirs = model(input_ids=ids).logits
    assert ours.shape == theirs.shape == (2, seq_len, 100) and ours.dtype == theirs.dtype == dtype
    return (ours - theirs).abs().max().item()


@pytest.mark.parametrize(("rope", "tie"), [(LLAMA3_ROPE, True), (LLAMA3_ROPE, False), (None, True)])
def test_logits_equal_llama_for_causal_lm_fp32(tmp_path: Path, rope: dict | None, tie: bool) -> None:
    assert compare_logits(tmp_path, torch.float32, rope, tie) <= 1e-4


@pytest.mark.usefixtures("full_precision_hf")
@pytest.mark.parametrize(("rope", "tie"), [(LLAMA3_ROPE, True), (LLAMA3_ROPE, False)])
def test_logits_equal_llama_for_causal_lm_fp64_to_round_off(tmp_path: Path, rope: dict, tie: bool) -> None:
    assert compare_logits(tmp_path, torch.float64, rope, tie) <= 1e-11


def test_llama3_scaling_matters_at_these_positions(tmp_path: Path) -> None:
    """Guard: loading the llama3 checkpoint with plain rotary tables is visibly wrong (> 1e-3 in the logits)."""
    model = tiny_llama(llama_config("sdpa", rope=LLAMA3_ROPE), torch.float64, causal_lm=True)
    model.save_pretrained(tmp_path, safe_serialization=True)
    ids = torch.randint(0, 100, (1, SEQ_LEN), generator=torch.Generator().manual_seed(1))
    scaled = armt_model(tmp_path, torch.float64, SEQ_LEN)
    plain = type(scaled)(scaled.spec.replace(rope_type="default"), scaled.params)
    graph = build_cell_graph(scaled.spec.num_layers, segment_tokens=(SEQ_LEN,), rule="layer_local")
    outputs = [execute(m, ids, make_schedule(graph, "sequential")).outputs[0] for m in (scaled, plain)]
    assert (scaled.logits(outputs[0]) - plain.logits(outputs[1])).abs().max() > 1e-3
