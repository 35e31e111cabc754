"""Batch-invariant building blocks over a leading layer-row dimension ``w``.

Every function here must give row i the same bits whatever w is: that is what makes a diagonal step of
width w equal w sequential steps. Element-wise work and last-dim reductions run over all rows at once,
composed from operations measured invariant (``sigmoid`` and ``silu_mul`` from ``exp``, since torch's own
are not); GEMMs and attention go through ``RowMatmul`` (``rowmm.py``). Measurements and tests: docs/exactness.md.

The same functions serve training: where an input tracks gradients they take an out-of-place path (the
in-place one would overwrite what autograd saved) with the same operations in the same order, so the same
bits, and a weight held per row takes ``grad_rowmm.scale_rows`` (its gradient summed row by row).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rmtsched.backends.torch.grad_rowmm import scale_rows
from rmtsched.backends.torch.rowmm import RowMatmul, aligned
from rmtsched.specs.model import RopeScaling

__all__ = [
    "RowMatmul",
    "aligned",
    "attention_rows",
    "dpfp",
    "dpfp_features",
    "dpfp_index",
    "l2_normalize",
    "merge_heads",
    "residual_add",
    "rms_norm",
    "rotary_apply",
    "rotary_inv_freq",
    "rotary_tables",
    "sigmoid",
    "silu_mul",
]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LLaMA RMSNorm: ``weight * x / sqrt(mean(x^2) + eps)``, computed in at least fp32 like HF.

    ``weight`` broadcasts against ``x`` (``[w, 1, 1, d]`` for per-layer weights). Normalising first and
    scaling after keeps the reduction a plain last-dim ``F.rms_norm`` (batch-invariant).
    """
    compute = torch.promote_types(x.dtype, torch.float32)
    normed = F.rms_norm(x.to(compute), (x.shape[-1],), eps=eps).to(x.dtype)
    if weight.requires_grad and weight.dim() == x.dim():  # one weight per row of a training step
        return scale_rows(normed, weight)
    return normed * weight


def residual_add(hidden: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """``hidden + update``, in place into ``hidden`` unless autograd tracks it (it may have saved it)."""
    return hidden + update if hidden.requires_grad or update.requires_grad else hidden.add_(update)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``1 / (1 + exp(-x))`` from invariant pieces (``torch.sigmoid`` is not batch-invariant on CPU)."""
    if x.requires_grad:
        return torch.reciprocal(torch.exp(-x) + 1.0)
    return torch.exp(-x).add_(1.0).reciprocal_()


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SwiGLU's ``silu(gate) * up`` as ``gate / (1 + exp(-gate)) * up`` (``F.silu`` is not invariant)."""
    if gate.requires_grad or up.requires_grad:
        return gate / (torch.exp(torch.neg(gate)) + 1.0) * up
    out = torch.neg(gate).exp_().add_(1.0)  # one buffer for the whole chain: four fewer large allocations
    return torch.div(gate, out, out=out).mul_(up)


# -- rotary position embeddings --------------------------------------------------------------------


def rotary_inv_freq(
    head_dim: int, theta: float, compute: torch.dtype, scaling: RopeScaling | None = None
) -> torch.Tensor:
    """The ``head_dim / 2`` rotary frequencies ``theta^(-2i/hd)``, llama3-scaled if ``scaling`` is given.

    The same operations, in the same dtype, as HF's ``compute_default_rope_parameters`` and
    ``_compute_llama3_parameters`` (see ``RopeScaling`` for the rule).
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).to(compute) / head_dim))
    if scaling is None:
        return inv_freq
    factor, low, high = scaling.factor, scaling.low_freq_factor, scaling.high_freq_factor
    original = scaling.original_max_position
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < original / high) * ~(wavelen > original / low)
    return torch.where(medium, smoothed, scaled)


def rotary_tables(
    num_tokens: int,
    head_dim: int,
    theta: float,
    dtype: torch.dtype,
    device: torch.device,
    scaling: RopeScaling | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """HF LLaMA's cos/sin tables ``[num_tokens, head_dim]`` for positions 0..num_tokens-1.

    Frequencies are computed in fp32 (fp64 for fp64 models) and cast, as ``LlamaRotaryEmbedding`` does.
    """
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    inv_freq = rotary_inv_freq(head_dim, theta, compute, scaling)
    positions = torch.arange(num_tokens, dtype=compute)
    freqs = torch.outer(positions, inv_freq)  # [n, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [n, hd]
    return emb.cos().to(dtype=dtype, device=device), emb.sin().to(dtype=dtype, device=device)


def rotary_apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` over the last dim (HF convention: halves, not interleaved).

    ``x`` is ``[..., tokens, heads, head_dim]``; ``cos``/``sin`` are ``[tokens, 1, head_dim]``.
    """
    half = x.shape[-1] // 2
    out = x * cos
    # rotate_half(x) * sin, added half by half in place: the same products and sums as building
    # cat((-x2, x1)) first, without its two temporaries.
    out[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-1.0)
    out[..., half:].addcmul_(x[..., :half], sin[..., half:])
    return out


# -- attention ---------------------------------------------------------------------------------------


def attention_rows(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Causal grouped-query attention, one canonical SDPA call per row (``RowMatmul("rows").attention``).

    ``q`` is ``[w, batch, heads, tokens, head_dim]``, ``k``/``v`` ``[w, batch, kv_heads, tokens,
    head_dim]``. Returns ``[w, batch, tokens, heads * head_dim]`` (heads merged, ready for o_proj), or,
    if ``out`` (q's shape) is given, writes the rows there and returns it. The causal mask covers
    segment and memory tokens alike.
    """
    attn = RowMatmul("rows").attention(q, k, v)
    return merge_heads(attn) if out is None else out.copy_(attn)


def merge_heads(attn: torch.Tensor) -> torch.Tensor:
    """``[w, B, H, n, hd] -> [w, B, n, H * hd]`` (one copy)."""
    w, batch, heads, tokens, head_dim = attn.shape
    return attn.transpose(2, 3).reshape(w, batch, tokens, heads * head_dim)


# -- associative memory --------------------------------------------------------------------------------


def dpfp_index(key_dim: int, nu: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather indices so that ``phi = x[..., left] * x[..., right]`` is DPFP-nu of ``x`` (size 2*key_dim).

    The reference builds ``cat([x]*nu) * cat([roll(x, j) for j in 1..nu])``; ``roll(x, j)[i] =
    x[(i - j) mod n]``, so two gathers replace nu rolls and two concatenations.
    """
    width = 2 * key_dim
    i = torch.arange(width)
    left = i.repeat(nu)
    right = torch.cat([(i - shift) % width for shift in range(1, nu + 1)])
    return left.to(device), right.to(device)


def dpfp(key: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """DPFP-nu feature map: ``x = [relu(k), relu(-k)]``, ``phi = x[left] * x[right]``."""
    x = torch.cat((key, -key), dim=-1).relu_()
    return x.index_select(-1, left).mul_(x.index_select(-1, right))


def dpfp_features(key: torch.Tensor, nu: int) -> torch.Tensor:
    """DPFP-nu without gathers: the same values and order as ``dpfp(key, *dpfp_index(...))``.

    Block j (1..nu) is ``x * roll(x, j)``: two slice products, ``x[j:] * x[:-j]`` and ``x[:j] * x[-j:]``
    (shifts taken mod the width); IEEE products are exact per element, so this is the gather form's bits.
    """
    x = torch.cat((key, -key), dim=-1).relu_()
    width = x.shape[-1]
    if x.requires_grad:  # out= writes are not differentiable: the same products, joined by cat
        shifts = [j % width for j in range(1, nu + 1)]
        blocks = [x * x if shift == 0 else torch.cat((x[..., :shift] * x[..., width - shift :],
                                                      x[..., shift:] * x[..., : width - shift]), dim=-1)
                  for shift in shifts]
        return torch.cat(blocks, dim=-1)
    phi = x.new_empty(*x.shape[:-1], nu, width)
    for block, shift in enumerate(j % width for j in range(1, nu + 1)):
        if shift == 0:
            torch.mul(x, x, out=phi[..., block, :])
            continue
        torch.mul(x[..., shift:], x[..., : width - shift], out=phi[..., block, shift:])
        torch.mul(x[..., :shift], x[..., width - shift :], out=phi[..., block, :shift])
    return phi.flatten(-2)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize(x, dim=-1)``: ``x / max(||x||_2, eps)`` over the last dim."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x / (norm.clamp_min(eps) if x.requires_grad else norm.clamp_min_(eps))
