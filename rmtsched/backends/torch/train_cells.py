"""One cell of ARMT or RMT as a differentiable function: the training executor's unit of forward and backward.

The inference path (``forward_layers``) is built for speed and bit-exact batching: in-place updates, ``out=``
kernels and the per-row GEMMs of ``RowMatmul``, none of which autograd can differentiate. A training cell
therefore runs the same maths (design notes, section 3) out of place with plain differentiable torch ops,
one cell at a time (width 1), so every schedule runs each cell on the same code path. It agrees with
``forward_layers`` to rounding (tests), and with itself bit for bit, which is what gradient exactness needs.

Weights come in as arguments (``LayerWeights``: one layer's rows; ``GlobalWeights``: embeddings, memory,
norm, head), so the executor can hand in leaves of its own and read their gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rmtsched.backends.torch.armt import GAMMA_EPS, READ_EPS, ARMTModel
from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.kernels import rms_norm, rotary_apply
from rmtsched.backends.torch.rmt import RMTModel
from rmtsched.errors import RmtschedError

LayerWeights = Mapping[str, torch.Tensor]  # one layer's rows of the stacked per-layer parameters
GlobalWeights = Mapping[str, torch.Tensor]  # embed, final_norm, memory, lm_head (when untied)


@dataclass(frozen=True)
class CellMaths:
    """How one family's cell reads its segment, runs one layer, and hands out its output."""

    segment_input: Callable[[StackedModel, GlobalWeights, torch.Tensor, torch.Tensor | None], torch.Tensor]
    layer: Callable[
        [StackedModel, LayerWeights, torch.Tensor, torch.Tensor | None, bool], tuple[torch.Tensor, torch.Tensor | None]
    ]
    segment_output: Callable[[StackedModel, GlobalWeights, torch.Tensor], torch.Tensor]


def llama_layer(model: StackedModel, weights: LayerWeights, hidden: torch.Tensor) -> torch.Tensor:
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


def head_weight(model: StackedModel, weights: GlobalWeights) -> torch.Tensor:
    return weights["embed"] if model.spec.tie_word_embeddings else weights["lm_head"]


# -- ARMT -----------------------------------------------------------------------------------------------
def _features(model: StackedModel, keys: torch.Tensor) -> torch.Tensor:
    """DPFP-nu as the reference writes it: ``cat([x] * nu) * cat([roll(x, j) for j = 1..nu])``."""
    x = F.relu(torch.cat((keys, -keys), dim=-1))
    nu = model.spec.dpfp_nu
    phi = torch.cat([x] * nu, dim=-1) * torch.cat([torch.roll(x, j, dims=-1) for j in range(1, nu + 1)], dim=-1)
    return F.normalize(phi, dim=-1) if model.spec.armt_variant == "normalized" else phi


def armt_layer(
    model: StackedModel, weights: LayerWeights, hidden: torch.Tensor, assoc: torch.Tensor | None, first: bool
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


def armt_segment_input(
    model: StackedModel, weights: GlobalWeights, inputs: torch.Tensor, previous: torch.Tensor | None
) -> torch.Tensor:
    tokens = weights["embed"][inputs]  # [B, T, d]
    if not model.spec.mem_tokens:
        return tokens
    return torch.cat((tokens, weights["memory"].expand(tokens.shape[0], -1, -1)), dim=1)  # [B, T + M, d]


def armt_segment_output(model: StackedModel, weights: GlobalWeights, hidden: torch.Tensor) -> torch.Tensor:
    kept = hidden[:, : hidden.shape[1] - model.spec.mem_tokens]
    return rms_norm(kept, weights["final_norm"], model.spec.rms_norm_eps)  # [B, T, d]


# -- RMT ------------------------------------------------------------------------------------------------
def rmt_layer(
    model: StackedModel, weights: LayerWeights, hidden: torch.Tensor, state: torch.Tensor | None, first: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    return llama_layer(model, weights, hidden), None


def rmt_segment_input(
    model: StackedModel, weights: GlobalWeights, inputs: torch.Tensor, previous: torch.Tensor | None
) -> torch.Tensor:
    """``[read memory, tokens, write memory]``; memory = the last layer's normed write slots of s-1."""
    tokens, m = weights["embed"][inputs], model.spec.mem_tokens
    if not m:
        return tokens
    if previous is None:
        memory = weights["memory"].expand(tokens.shape[0], -1, -1)
    else:
        memory = rms_norm(previous[:, previous.shape[1] - m :], weights["final_norm"], model.spec.rms_norm_eps)
    return torch.cat((memory, tokens, memory), dim=1)  # [B, M + T + M, d]


def rmt_segment_output(model: StackedModel, weights: GlobalWeights, hidden: torch.Tensor) -> torch.Tensor:
    m = model.spec.mem_tokens
    return rms_norm(hidden[:, m : hidden.shape[1] - m], weights["final_norm"], model.spec.rms_norm_eps)


CELL_MATHS: dict[type, CellMaths] = {
    ARMTModel: CellMaths(armt_segment_input, armt_layer, armt_segment_output),
    RMTModel: CellMaths(rmt_segment_input, rmt_layer, rmt_segment_output),
}


def cell_maths(model: object) -> CellMaths:
    """The training cell of ``model``'s family; only the built-in ARMT and RMT have one so far."""
    maths = CELL_MATHS.get(type(model))
    if maths is None:
        raise RmtschedError(
            f"training needs a differentiable cell; {type(model).__name__} has none (expected one of "
            f"{sorted(kind.__name__ for kind in CELL_MATHS)})"
        )
    return maths


def initial_state(model: StackedModel, batch_size: int) -> torch.Tensor | None:
    """A layer's state before segment 0: ARMT's zero A | z, RMT's none."""
    if not isinstance(model, ARMTModel):
        return None
    spec = model.spec
    return torch.zeros(batch_size, spec.phi_dim, spec.d_model + 1, dtype=model.dtype, device=model.device)


__all__ = ["CELL_MATHS", "CellMaths", "cell_maths", "head_weight", "initial_state", "llama_layer"]
