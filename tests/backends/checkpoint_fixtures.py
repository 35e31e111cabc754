"""Checkpoints as users have them, built in tests: tiny Hugging Face LLaMAs and ARMT reference checkpoints.

* ``tiny_llama`` / ``llama_config``: a 2-layer ``transformers`` LLaMA (optionally llama3 rotary scaling and
  tied embeddings) with weights large enough that every layer moves the output visibly.
* ``ReferenceARMT``: an independent transcription of the ARMT reference wrapper, written from the design notes
  (section 3), NOT from rmtsched: a ``transformers.LlamaForCausalLM`` (optionally wrapped by ``peft`` LoRA)
  whose decoder layers are replaced by ``AssociativeLayer`` modules holding ``W_mq``/``W_mk``/``W_mv``/``W_mb``
  and the HF layer as ``layer``, registered twice (``memory_cell.layers`` and the model's own list), as the
  reference does. Its ``forward`` runs segment by segment with memory tokens and returns the logits.
* ``save_reference``: its state dict as the reference saves it (each shared tensor once, under the chosen
  alias), plus ``config.json`` and, for LoRA, peft's ``adapter_config.json``; ``reference_checkpoint`` builds
  and saves one in a call (for other tests: generation, the API, the CLI).
* ``full_precision_hf``: patches HF's RMSNorm and rotary tables (which HF computes in fp32 even for fp64
  models) to full precision, the llama3 scaling transcribed here from its published formula.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from backend_helpers import llama3_inv_freq_fp64
from torch import nn

transformers = pytest.importorskip("transformers")
modeling_llama = pytest.importorskip("transformers.models.llama.modeling_llama")

TINY_LLAMA = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=2048)
# head_dim 8, theta 1e4: wavelengths 6.3, 63, 628, 6283 fall in the kept (< 1024 / 8), smoothed and
# scaled (> 1024) bands, so every branch of the llama3 rule is exercised.
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 8.0, "original_max_position_embeddings": 1024}


def llama_config(attn: str = "sdpa", rope: dict[str, Any] | None = None, tie: bool = False, **changes: Any):
    sizes = {**TINY_LLAMA, **changes}
    if rope is not None:
        sizes["rope_parameters"] = dict(rope)
    return transformers.LlamaConfig(**sizes, tie_word_embeddings=tie, attn_implementation=attn)


def randomise_(model: nn.Module, seed: int = 0) -> None:
    """Norm weights around 1, unit embeddings, std-0.2 projections: every layer moves the output visibly."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(torch.rand(param.shape, generator=generator) + 0.5)
            elif "embed_tokens" in name or name.endswith("memory"):
                param.copy_(torch.randn(param.shape, generator=generator))
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


def tiny_llama(config, dtype: torch.dtype = torch.float32, causal_lm: bool = True, seed: int = 0):
    model = (transformers.LlamaForCausalLM if causal_lm else transformers.LlamaModel)(config)
    randomise_(model, seed)
    return model.to(dtype).eval()


# -- full-precision HF (fp64 comparisons to round-off) ------------------------------------------------------


def _rms_norm_full_precision(self, hidden_states: torch.Tensor) -> torch.Tensor:
    x = hidden_states
    return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


def _rotary_full_precision(self, x: torch.Tensor, position_ids: torch.Tensor):
    dim = 2 * self.inv_freq.shape[0]
    inv_freq = llama3_inv_freq_fp64(self.config.rope_parameters, dim)
    freqs = position_ids[..., None].to(torch.float64) * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


@pytest.fixture
def full_precision_hf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", _rms_norm_full_precision)
    monkeypatch.setattr(modeling_llama.LlamaRotaryEmbedding, "forward", _rotary_full_precision)


# -- the ARMT reference wrapper, transcribed from the design notes -------------------------------------------


class AssociativeLayer(nn.Module):
    """A decoder layer with its associative memory (one head, DPFP-3, no gating), as the reference names it."""

    def __init__(self, layer: nn.Module, d_model: int, d_mem: int, num_mem_tokens: int, variant: str):
        super().__init__()
        self.W_mq = nn.Linear(d_model, d_mem, bias=False)
        self.W_mk = nn.Linear(d_model, d_mem, bias=False)
        self.W_mv = nn.Linear(d_model, d_model, bias=False)
        self.W_mb = nn.Linear(d_model, 1)
        self.layer = layer
        self.num_mem_tokens, self.variant = num_mem_tokens, variant
        self.zero_mem()

    def zero_mem(self) -> None:
        self.A: torch.Tensor | None = None  # [B, d_phi, d]
        self.z: torch.Tensor | None = None  # [B, d_phi]

    def phi(self, x: torch.Tensor, nu: int = 3) -> torch.Tensor:
        x = torch.cat([F.relu(x), F.relu(-x)], dim=-1)
        phi = torch.cat([x] * nu, dim=-1) * torch.cat([x.roll(j, dims=-1) for j in range(1, nu + 1)], dim=-1)
        return F.normalize(phi, dim=-1) if self.variant == "normalized" else phi

    def forward(self, hidden: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.A is not None:  # read, skipped in the first segment
            q = self.phi(self.W_mq(hidden))
            hidden = hidden + (q @ self.A) / ((q * self.z[:, None, :]).sum(-1, keepdim=True) + 1e-5)
        out = self.layer(hidden, *args, **kwargs)
        self.write(out[:, -self.num_mem_tokens:])
        return out

    def write(self, mem: torch.Tensor) -> None:
        k, v = self.phi(self.W_mk(mem)), self.W_mv(mem)  # [B, M, d_phi], [B, M, d]
        beta = torch.sigmoid(self.W_mb(mem))  # [B, M, 1]
        if self.A is None:
            self.A = torch.zeros(mem.shape[0], k.shape[-1], mem.shape[-1], dtype=mem.dtype)
            self.z = torch.zeros(mem.shape[0], k.shape[-1], dtype=mem.dtype)
            v_prev, gamma = torch.zeros_like(v), torch.ones_like(beta)
        else:
            den = (k * self.z[:, None, :]).sum(-1, keepdim=True) + 1e-5
            v_prev = (k @ self.A) / den
            eps = 1e-5 if self.variant == "paper" else 0.0
            gamma = torch.clip(1 - den / (k.pow(2).sum(-1, keepdim=True) + eps), 0, 1)
        self.A = self.A + k.transpose(1, 2) @ (beta * (v - v_prev))
        self.z = self.z + (gamma * k).sum(1)


class MemoryCell(nn.Module):
    def __init__(self, model: nn.Module, layers: nn.ModuleList, num_mem_tokens: int, d_model: int):
        super().__init__()
        self.model = model
        self.layers = layers  # the same modules as the model's own layer list: two names for one tensor
        self.memory = nn.Parameter(torch.zeros(num_mem_tokens, d_model))


class ReferenceARMT(nn.Module):
    """``memory_cell.model`` = the (peft-wrapped) LlamaForCausalLM, its layers replaced by ``AssociativeLayer``."""

    def __init__(self, config, num_mem_tokens: int, d_mem: int, variant: str, lora: dict[str, Any] | None = None,
                 seed: int = 0):
        super().__init__()
        model = tiny_llama(config, torch.float32, causal_lm=True, seed=seed)
        self.lora_config = None
        if lora is not None:
            peft = pytest.importorskip("peft")
            self.lora_config = peft.LoraConfig(**lora)
            model = peft.get_peft_model(model, self.lora_config)
            layers = model.base_model.model.model.layers
        else:
            layers = model.model.layers
        d = config.hidden_size
        for index in range(len(layers)):
            layers[index] = AssociativeLayer(layers[index], d, d_mem, num_mem_tokens, variant)
        self.memory_cell = MemoryCell(model, layers, num_mem_tokens, d)
        randomise_(self, seed + 1)  # also LoRA's B (peft starts it at zero, which would hide the merge)
        self.num_mem_tokens = num_mem_tokens

    def forward(self, ids: torch.Tensor, segment_len: int) -> torch.Tensor:
        """Logits ``[B, N, V]``: each segment with the memory tokens appended, memory positions dropped."""
        cell = self.memory_cell
        for layer in cell.layers:
            layer.zero_mem()
        embed = cell.model.get_input_embeddings()
        logits = []
        with torch.no_grad():
            for start in range(0, ids.shape[1], segment_len):
                tokens = embed(ids[:, start : start + segment_len])
                memory = cell.memory.expand(ids.shape[0], -1, -1)
                out = cell.model(inputs_embeds=torch.cat([tokens, memory], dim=1)).logits
                logits.append(out[:, : tokens.shape[1]])
        return torch.cat(logits, dim=1)


def reference_state_dict(wrapper: ReferenceARMT, alias: str) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor once: layers under ``short`` (memory_cell.layers.{i}.),
    ``long`` (memory_cell.model[.base_model.model].model.layers.{i}.) or ``mixed`` (alternating by layer);
    a tied lm_head is dropped (it is the embedding table)."""
    state = wrapper.state_dict()
    tied = wrapper.memory_cell.model.config.tie_word_embeddings
    kept = {}
    for key, value in state.items():
        short = key.startswith("memory_cell.layers.")
        layer = int(key.split("layers.")[1].split(".")[0]) if "layers." in key else None
        want_short = alias == "short" or (alias == "mixed" and layer is not None and layer % 2 == 0)
        if layer is not None and short != want_short:
            continue
        if tied and key.endswith("lm_head.weight"):
            continue
        kept[key] = value.detach().clone().contiguous()
    return kept


def save_reference(wrapper: ReferenceARMT, directory: Path, alias: str = "long") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(reference_state_dict(wrapper, alias), str(directory / "model.safetensors"))
    base = wrapper.memory_cell.model
    config = base.get_base_model().config if wrapper.lora_config is not None else base.config
    config.to_json_file(str(directory / "config.json"))
    if wrapper.lora_config is not None:
        wrapper.lora_config.save_pretrained(str(directory))
    return directory


LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]}


def reference_checkpoint(directory: Path, variant: str = "paper", lora: bool = False, alias: str = "long",
                         rope: dict[str, Any] | None = None, tie: bool = False, mem_tokens: int = 3,
                         d_mem: int = 5) -> ReferenceARMT:
    """Save a tiny reference checkpoint (2 layers, d 32, vocab 100) in ``directory``; returns its transcription
    in fp64 (call it as ``wrapper(ids, segment_len)`` for the expected logits)."""
    wrapper = ReferenceARMT(llama_config(rope=rope, tie=tie), mem_tokens, d_mem, variant, LORA if lora else None)
    save_reference(wrapper, directory, alias)
    return wrapper.double()
