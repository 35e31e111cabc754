"""A naive, obviously-correct ARMT/RMT written here from the maths: the oracle of the reference tests.

The naive model is plain per-layer, per-segment PyTorch in the shape of the ARMT reference code and Hugging
Face LLaMA (``F.linear``, ``F.silu``, ``torch.sigmoid``, ``F.normalize``, an explicit masked softmax, a
``first_seg`` flag that skips the first read): no scheduler, no stacking, no batching over layers. Its
kernels round differently from ours, so comparisons are in fp64 with a tolerance of 1e-10 (absolute, on
O(1) activations). Shared by test_backend_reference.py and test_backend_generate.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from backend_helpers import llama3_inv_freq_fp64, spec_rope

from rmtsched.specs.model import ModelSpec

TOLERANCE = 1e-10


def rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def llama_layer(spec: ModelSpec, p: dict, layer: int, x: torch.Tensor) -> torch.Tensor:
    batch, n, _ = x.shape
    heads, kv_heads, hd = spec.num_heads, spec.num_kv_heads, spec.head_dim
    wq, wk, wv = p["wqkv"][layer].split([heads * hd, kv_heads * hd, kv_heads * hd])
    h = rms(x, p["attn_norm"][layer], spec.rms_norm_eps)
    q = F.linear(h, wq).view(batch, n, heads, hd).transpose(1, 2)
    k = F.linear(h, wk).view(batch, n, kv_heads, hd).transpose(1, 2)
    v = F.linear(h, wv).view(batch, n, kv_heads, hd).transpose(1, 2)
    inv_freq = llama3_inv_freq_fp64(spec_rope(spec), hd)
    angles = torch.outer(torch.arange(n, dtype=torch.float64), inv_freq)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    k = k.repeat_interleave(heads // kv_heads, dim=1)
    v = v.repeat_interleave(heads // kv_heads, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, n, heads * hd)
    x = x + F.linear(attn, p["wo"][layer])
    h = rms(x, p["mlp_norm"][layer], spec.rms_norm_eps)
    gate, up = p["w_gate_up"][layer].split(spec.mlp_dim)
    return x + F.linear(F.silu(F.linear(h, gate)) * F.linear(h, up), p["w_down"][layer])


def dpfp_reference(x, nu):
    x = torch.cat([F.relu(x), F.relu(-x)], dim=-1)
    x_rolled = torch.cat([x.roll(shifts=j, dims=-1) for j in range(1, nu + 1)], dim=-1)
    x_repeat = torch.cat([x] * nu, dim=-1)
    return x_repeat * x_rolled


def phi(spec: ModelSpec, keys: torch.Tensor) -> torch.Tensor:
    """DPFP of the keys; the "normalized" variant L2-normalises it (design notes section 3)."""
    phi = dpfp_reference(keys, spec.dpfp_nu)
    return F.normalize(phi, dim=-1) if spec.armt_variant == "normalized" else phi


def naive_armt(spec: ModelSpec, p: dict, inputs: torch.Tensor):
    """Returns (segment outputs, A per layer, z per layer)."""
    batch, d, m, mem = inputs.shape[0], spec.d_model, spec.mem_key_dim, spec.mem_tokens
    w_mk, w_mv, w_mb = [], [], []
    for layer in range(spec.num_layers):
        k_, v_, b_ = p["mem_wkvb"][layer].split([m, d, 1])
        w_mk.append(k_), w_mv.append(v_), w_mb.append(b_)
    big_a = [torch.zeros(batch, spec.phi_dim, d, dtype=torch.float64) for _ in range(spec.num_layers)]
    z = [torch.zeros(batch, spec.phi_dim, dtype=torch.float64) for _ in range(spec.num_layers)]
    first = [True] * spec.num_layers
    outputs = []
    for start in range(0, inputs.shape[1], spec.segment_len):
        tokens = p["embed"][inputs[:, start : start + spec.segment_len]]
        x = torch.cat([tokens, p["memory"].expand(batch, -1, -1)], dim=1)
        for layer in range(spec.num_layers):
            if not first[layer]:
                mq = phi(spec, F.linear(x, p["mem_wq"][layer]))
                num = torch.einsum("bjk,bkt->bjt", mq, big_a[layer])
                denom = torch.einsum("bk,bjk->bj", z[layer], mq)[..., None] + 1e-5
                x = x + num / denom
            x = llama_layer(spec, p, layer, x)
            if mem == 0:
                continue
            mem_out = x[:, -mem:]
            mk = phi(spec, F.linear(mem_out, w_mk[layer]))
            new_mv = F.linear(mem_out, w_mv[layer])
            if first[layer]:
                prev_mv, coef = torch.zeros_like(new_mv), 1.0
            else:
                denom = torch.einsum("bk,bjk->bj", z[layer], mk)[..., None] + 1e-5
                prev_mv = torch.einsum("bjk,bkt->bjt", mk, big_a[layer]) / denom
                gamma_eps = 1e-5 if spec.armt_variant == "paper" else 0.0
                coef = torch.clip(1 - denom / (torch.linalg.norm(mk, dim=-1) ** 2 + gamma_eps)[..., None], 0, 1)
            beta = torch.sigmoid(F.linear(mem_out, w_mb[layer], p["mem_b_bias"][layer : layer + 1]))
            big_a[layer] = big_a[layer] + torch.einsum("bjk,bjt,bjx->bkt", mk, new_mv - prev_mv, beta)
            z[layer] = z[layer] + (coef * mk).sum(dim=1)
            first[layer] = False
        outputs.append(rms(x[:, : x.shape[1] - mem], p["final_norm"], spec.rms_norm_eps))
    return outputs, big_a, z


def naive_rmt(spec: ModelSpec, p: dict, inputs: torch.Tensor):
    batch, mem = inputs.shape[0], spec.mem_tokens
    memory = p["memory"].expand(batch, -1, -1)
    outputs = []
    for start in range(0, inputs.shape[1], spec.segment_len):
        x = torch.cat([memory, p["embed"][inputs[:, start : start + spec.segment_len]], memory], dim=1)
        for layer in range(spec.num_layers):
            x = llama_layer(spec, p, layer, x)
        normed = rms(x, p["final_norm"], spec.rms_norm_eps)
        outputs.append(normed[:, mem : x.shape[1] - mem])
        memory = normed[:, x.shape[1] - mem :]
    return outputs


# The llama3 specs' original_max_position puts one rotary wavelength in each band (kept, smoothed, scaled).
SPECS = {
    "armt-gqa": ModelSpec(name="r", family="armt", num_layers=3, d_model=24, num_heads=4, num_kv_heads=2,
                          mlp_dim=40, vocab_size=50, segment_len=7, mem_tokens=3, mem_key_dim=5),
    "armt-mha": ModelSpec(name="r", family="armt", num_layers=2, d_model=16, num_heads=2, num_kv_heads=2,
                          mlp_dim=24, vocab_size=50, segment_len=5, mem_tokens=4, mem_key_dim=4),
    "armt-m0": ModelSpec(name="r", family="armt", num_layers=2, d_model=16, num_heads=1, num_kv_heads=1,
                         mlp_dim=24, vocab_size=50, segment_len=6, mem_tokens=0, mem_key_dim=3),
    "armt-gqa-normalized": ModelSpec(name="r", family="armt", num_layers=3, d_model=24, num_heads=4,
                                     num_kv_heads=2, mlp_dim=40, vocab_size=50, segment_len=7, mem_tokens=3,
                                     mem_key_dim=5, armt_variant="normalized"),
    "armt-tied-llama3": ModelSpec(name="r", family="armt", num_layers=3, d_model=24, num_heads=4, num_kv_heads=2,
                                  mlp_dim=40, vocab_size=50, segment_len=7, mem_tokens=3, mem_key_dim=5,
                                  tie_word_embeddings=True, rope_type="llama3", rope_original_max_position=256),
    "armt-normalized-tied-llama3": ModelSpec(name="r", family="armt", num_layers=2, d_model=16, num_heads=2,
                                             num_kv_heads=1, mlp_dim=24, vocab_size=50, segment_len=9, mem_tokens=2,
                                             mem_key_dim=4, armt_variant="normalized", tie_word_embeddings=True,
                                             rope_type="llama3", rope_original_max_position=1024),
    "rmt": ModelSpec(name="r", family="rmt", num_layers=3, d_model=24, num_heads=4, num_kv_heads=2,
                     mlp_dim=40, vocab_size=50, segment_len=7, mem_tokens=3),
}
