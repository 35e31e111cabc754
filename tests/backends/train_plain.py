"""A plain-autograd transcription of one ARMT / RMT layer: stock torch ops only (F.linear, SDPA, baddbmm,
DPFP from cat and roll as the reference writes it), none of rmtsched's kernels or autograd functions.

Training gradients through it are autograd's own derivatives of the maths (design notes, section 3), so
comparing them (fp64, to rounding) with the executor's checks the hand-written backward of ``grad_rowmm``.
Rows are ``[1, ...]`` (width 1), as ``train_reference.sequential_bptt`` hands them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rmtsched.backends.torch.armt import GAMMA_EPS, READ_EPS
from rmtsched.backends.torch.kernels import rms_norm, rotary_apply


def llama_layer(model, weights, hidden: torch.Tensor) -> torch.Tensor:
    """One LLaMA decoder layer on ``hidden`` ``[B, n, d]``, out of place (``layers.llama_layers``' maths)."""
    spec = model.spec
    batch, n, _ = hidden.shape  # [B, n, d]
    heads, kv_heads, hd, mlp = spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.mlp_dim
    x = rms_norm(hidden, weights["attn_norm"], spec.rms_norm_eps)  # [B, n, d]
    qkv = F.linear(x, weights["wqkv"]).view(batch, n, heads + 2 * kv_heads, hd)  # [B, n, H + 2K, hd]
    cos, sin = model.rope.get(n)  # [n, 1, hd]
    qk = rotary_apply(qkv[..., : heads + kv_heads, :], cos, sin)  # [B, n, H + K, hd]
    q = qk[..., :heads, :].transpose(1, 2)  # [B, H, n, hd]
    k = qk[..., heads:, :].transpose(1, 2)  # [B, K, n, hd]
    v = qkv[..., heads + kv_heads :, :].transpose(1, 2)  # [B, K, n, hd]
    attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=heads != kv_heads)  # [B, H, n, hd]
    hidden = hidden + F.linear(attn.transpose(1, 2).reshape(batch, n, heads * hd), weights["wo"])
    x = rms_norm(hidden, weights["mlp_norm"], spec.rms_norm_eps)
    gate_up = F.linear(x, weights["w_gate_up"])  # [B, n, 2F]
    gate, up = gate_up[..., :mlp], gate_up[..., mlp:]
    return hidden + F.linear(gate / (torch.exp(-gate) + 1.0) * up, weights["w_down"])  # [B, n, d]






# -- ARMT -----------------------------------------------------------------------------------------------
def _features(model, keys: torch.Tensor) -> torch.Tensor:
    """DPFP-nu as the reference writes it: ``cat([x] * nu) * cat([roll(x, j) for j = 1..nu])``."""
    x = F.relu(torch.cat((keys, -keys), dim=-1))
    nu = model.spec.dpfp_nu
    phi = torch.cat([x] * nu, dim=-1) * torch.cat([torch.roll(x, j, dims=-1) for j in range(1, nu + 1)], dim=-1)
    return F.normalize(phi, dim=-1) if model.spec.armt_variant == "normalized" else phi


def armt_layer(
    model, weights, hidden: torch.Tensor, assoc: torch.Tensor | None, first: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read, layer, write for one layer and segment; ``assoc`` ``[B, d_phi, d + 1]`` is A | z before it."""
    spec = model.spec
    d, key_dim, m = spec.d_model, spec.mem_key_dim, spec.mem_tokens
    phi = _features(model, F.linear(hidden, weights["mem_wq"]))  # [B, n, d_phi]
    num_den = torch.matmul(phi, assoc)  # [B, n, d + 1]
    hidden = llama_layer(model, weights, hidden + num_den[..., :d] / (num_den[..., d:] + READ_EPS))
    if not m:
        return hidden, assoc
    kvb = F.linear(hidden[:, hidden.shape[1] - m :], weights["mem_wkvb"])  # [B, M, m + d + 1]
    phi = _features(model, kvb[..., :key_dim])  # [B, M, d_phi]
    value = kvb[..., key_dim : key_dim + d]
    beta = torch.sigmoid(kvb[..., key_dim + d :] + weights["mem_b_bias"])  # [B, M, 1]
    num_den = torch.matmul(phi, assoc)  # [B, M, d + 1]
    den = num_den[..., d:] + READ_EPS
    v_prev = num_den[..., :d] / den
    norm_sq = torch.linalg.vector_norm(phi, dim=-1, keepdim=True).square() + GAMMA_EPS[spec.armt_variant]
    gamma = torch.ones_like(den) if first else (1.0 - den / norm_sq).clamp(0.0, 1.0)  # [B, M, 1]
    update = torch.cat((beta * (value - v_prev), gamma), dim=-1)  # [B, M, d + 1]
    return hidden, torch.baddbmm(assoc, phi.transpose(1, 2), update)  # [B, d_phi, d + 1]




def plain_layer(model, weights, hidden: torch.Tensor, state: torch.Tensor | None, first: bool):
    """``sequential_bptt``'s ``layer_fn``: one layer on width-1 rows, through the plain transcription."""
    row = {name: value[0] for name, value in weights.items()}
    if state is None:  # RMT: no layer state
        return llama_layer(model, row, hidden[0]).unsqueeze(0), None
    out, assoc = armt_layer(model, row, hidden[0], state[0], first)
    return out.unsqueeze(0), assoc.unsqueeze(0)
