"""The ONE batched LLaMA decoder-layer step, shared by ARMT and RMT and by every schedule.

``llama_layers`` runs layers l0..l1 (contiguous, width w) on ``[w, batch, tokens, d]`` hidden states,
row i through layer l0 + i's weights: RMSNorm, rotary grouped-query causal attention, RMSNorm, SwiGLU
MLP, each residual. Projections are one GEMM per weight kind over the stacked slice (QKV fused, gate
and up fused); element-wise work runs once over all rows. A width-1 step is the same code.
With a ``KVCache`` (decoding, the full-attention baseline) the same code runs a block of new tokens
after the cached ones: their rotary positions continue from the cache and they attend to it. Training
runs the same code under autograd (``train_executor``), with ``grad_rowmm.GradRowMatmul`` for the GEMMs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from rmtsched.backends.torch.kernels import merge_heads, residual_add, rms_norm, rotary_apply, rotary_tables, silu_mul
from rmtsched.backends.torch.rowmm import RowMatmul
from rmtsched.specs.model import ModelSpec, RopeScaling

if TYPE_CHECKING:
    from rmtsched.backends.torch.grad_rowmm import GradRowMatmul
    from rmtsched.backends.torch.kv_cache import KVCache


@dataclass
class RotaryCache:
    """cos/sin tables per token count (positions restart at 0 every segment), built once each."""

    head_dim: int
    theta: float
    dtype: torch.dtype
    device: torch.device
    scaling: RopeScaling | None = None
    _tables: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def get(self, num_tokens: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables ``[num_tokens, 1, head_dim]`` for positions ``offset .. offset + num_tokens - 1``.

        A segment (offset 0) gets the table built for its token count, as always. Tokens after a KV cache
        slice the table of the next power of two, so decoding N tokens builds O(log N) tables, not N.
        """
        if offset:
            cos, sin = self.get(1 << (offset + num_tokens - 1).bit_length())
            return cos[offset : offset + num_tokens], sin[offset : offset + num_tokens]
        tables = self._tables.get(num_tokens)
        if tables is None:
            # Normal tensors even when first asked for under inference mode: training's autograd saves them.
            with torch.inference_mode(False):
                cos, sin = rotary_tables(num_tokens, self.head_dim, self.theta, self.dtype, self.device, self.scaling)
            tables = self._tables[num_tokens] = (cos[:, None, :], sin[:, None, :])
        return tables


def llama_layers(
    hidden: torch.Tensor,
    params: Mapping[str, torch.Tensor],
    rows: slice,
    spec: ModelSpec,
    rope: RotaryCache,
    matmul: RowMatmul | GradRowMatmul,
    cache: KVCache | None = None,
) -> torch.Tensor:
    """Decoder layers ``params[*][rows]`` on ``hidden`` ``[w, B, n, d]``; returns a new tensor.

    With a ``GradRowMatmul`` and weights that track gradients it is a training step's layers (autograd
    records it; every backward row is row-exact too).

    ``cache`` (rows indexed like ``params``) makes ``hidden`` the tokens after those cached: they take the
    next rotary positions, their keys and values join the cache, and they attend to all of it.
    """
    w, batch, n, d = hidden.shape
    heads, kv_heads, hd, mlp = spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.mlp_dim
    eps = spec.rms_norm_eps

    x = rms_norm(hidden, params["attn_norm"][rows].view(w, 1, 1, d), eps)  # [w, B, n, d]
    qkv = matmul.linear(x.view(w, batch * n, d), params["wqkv"][rows])  # [w, B n, (H + 2K) hd]
    qkv = qkv.view(w, batch, n, heads + 2 * kv_heads, hd)  # [w, B, n, H + 2K, hd]
    past = 0 if cache is None else cache.past_tokens(rows)  # tokens already in the KV cache
    cos, sin = rope.get(n, past)  # [n, 1, hd], positions past .. past + n - 1
    qk = rotary_apply(qkv[..., : heads + kv_heads, :], cos, sin)  # [w, B, n, H + K, hd]
    q = qk[..., :heads, :].transpose(2, 3)  # [w, B, H, n, hd]
    k = qk[..., heads:, :].transpose(2, 3)  # [w, B, K, n, hd]
    v = qkv[..., heads + kv_heads :, :].transpose(2, 3)  # [w, B, K, n, hd]
    if cache is not None:
        k, v = cache.append(rows, k, v)  # [w, B, K, past + n, hd]
    attn = merge_heads(matmul.attention(q, k, v))  # [w, B, n, H hd]
    out = matmul.linear(attn.view(w, batch * n, heads * hd), params["wo"][rows])  # [w, B n, d]
    hidden = hidden + out.view(w, batch, n, d)

    x = rms_norm(hidden, params["mlp_norm"][rows].view(w, 1, 1, d), eps)  # [w, B, n, d]
    gate_up = matmul.linear(x.view(w, batch * n, d), params["w_gate_up"][rows])  # [w, B n, 2F]
    act = silu_mul(gate_up[..., :mlp], gate_up[..., mlp:])  # [w, B n, F]
    out = matmul.linear(act, params["w_down"][rows])  # [w, B n, d]
    return residual_add(hidden, out.view(w, batch, n, d))
