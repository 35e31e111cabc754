"""Parity with Hugging Face: with memory switched off, one ARMT segment equals ``transformers.LlamaModel``.

Memory off means M = 0 (no memory tokens, no write) and a zero associative read: A and z start at zero,
so the read adds ``0 / (0 + 1e-5)``, an exact 0, in the first segment; no weight needs zeroing. One
segment of T tokens (T = the whole input) runs through the executor; ``segment_output`` applies the
final RMSNorm, so it compares with ``last_hidden_state`` (which HF also returns normalised).

Tolerances on the max abs difference (outputs ~1-4 in size; measured on this CPU, torch 2.13, transformers
5.24: fp32 ~2e-6, fp64 as shipped ~7e-7, fp64 full precision 3e-15):
* fp32, HF as shipped (eager or SDPA attention): 1e-5.
* fp64, HF as shipped: 1e-5, because HF computes RMSNorm and the RoPE tables in fp32 even for fp64
  models (and eager attention's softmax too); rmtsched computes them in fp64.
* fp64 with HF's RMSNorm and RoPE patched to full precision, SDPA attention: 1e-12.
Both use the rotate-half RoPE convention (``kernels.rotary_apply``), so weights load without permuting.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from rmtsched.backends.torch import execute
from rmtsched.backends.torch.checkpoint import load_model
from rmtsched.backends.torch.hf_llama import hf_model_spec
from rmtsched.sched import build_cell_graph, make_schedule

transformers = pytest.importorskip("transformers")
modeling_llama = pytest.importorskip("transformers.models.llama.modeling_llama")

SEQ_LEN = 23


def tiny_llama(attn: str, dtype: torch.dtype, causal_lm: bool = False):
    """A random 2-layer LLaMA with weights large enough that every layer moves the output visibly."""
    config = transformers.LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, rms_norm_eps=1e-6, attn_implementation=attn,
    )
    torch.manual_seed(0)
    model = (transformers.LlamaForCausalLM if causal_lm else transformers.LlamaModel)(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
            elif "embed_tokens" in name:
                param.normal_(0.0, 1.0)
            else:
                param.normal_(0.0, 0.2)
    return model.to(dtype).eval()


def armt_output(directory: Path, dtype: torch.dtype, ids: torch.Tensor) -> torch.Tensor:
    """One segment of the whole input through the executor, memory off (M = 0)."""
    config = json.loads((directory / "config.json").read_text())
    spec = hf_model_spec(config, segment_len=ids.shape[1], mem_tokens=0, mem_key_dim=8)
    model = load_model(directory, spec, dtype=dtype)
    graph = build_cell_graph(spec.num_layers, segment_tokens=(ids.shape[1],), rule=spec.dependency_rule)
    result = execute(model, ids, make_schedule(graph, "sequential"))
    assert result.outputs is not None and len(result.outputs) == 1
    return result.outputs[0]


def hf_output(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if isinstance(model, transformers.LlamaForCausalLM):
            return model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        return model(input_ids=ids).last_hidden_state


def compare(tmp_path: Path, attn: str, dtype: torch.dtype, causal_lm: bool = False) -> float:
    model = tiny_llama(attn, dtype, causal_lm)
    model.save_pretrained(tmp_path, safe_serialization=True)
    ids = torch.randint(0, 100, (2, SEQ_LEN), generator=torch.Generator().manual_seed(1))
    ours, theirs = armt_output(tmp_path, dtype, ids), hf_output(model, ids)
    assert ours.shape == theirs.shape == (2, SEQ_LEN, 32) and ours.dtype == theirs.dtype == dtype
    return (ours - theirs).abs().max().item()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_segment_without_memory_equals_hf_llama(tmp_path: Path, attn: str, dtype: torch.dtype) -> None:
    assert compare(tmp_path, attn, dtype) <= 1e-5


def test_causal_lm_checkpoint_loads_and_matches(tmp_path: Path) -> None:
    """``LlamaForCausalLM`` saves with a ``model.`` prefix and an ``lm_head``; both are handled."""
    assert compare(tmp_path, "sdpa", torch.float32, causal_lm=True) <= 1e-5


def _rms_norm_full_precision(self, hidden_states: torch.Tensor) -> torch.Tensor:
    dtype = hidden_states.dtype
    x = hidden_states.to(torch.promote_types(dtype, torch.float32))
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
    return self.weight * x.to(dtype)


def _rotary_full_precision(self, x: torch.Tensor, position_ids: torch.Tensor):
    compute = torch.promote_types(x.dtype, torch.float32)
    dim = 2 * self.inv_freq.shape[0]
    theta = self.config.rope_parameters["rope_theta"]
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).to(compute) / dim))
    freqs = position_ids[..., None].to(compute) * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def test_fp64_matches_full_precision_hf_to_round_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", _rms_norm_full_precision)
    monkeypatch.setattr(modeling_llama.LlamaRotaryEmbedding, "forward", _rotary_full_precision)
    assert compare(tmp_path, "sdpa", torch.float64) <= 1e-12


def test_parity_is_sensitive_to_a_weight_mix_up(tmp_path: Path) -> None:
    """The tolerance is far below what a mapping error costs: swapping gate and up shows at once."""
    model = tiny_llama("sdpa", torch.float32)
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
    model = tiny_llama("sdpa", torch.float32)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.bfloat16().float())
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(tmp_path, safe_serialization=True, max_shard_size="20KB")
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ids = torch.randint(0, 100, (1, SEQ_LEN), generator=torch.Generator().manual_seed(1))
    assert (armt_output(tmp_path, torch.float32, ids) - hf_output(model, ids)).abs().max().item() <= 1e-5
