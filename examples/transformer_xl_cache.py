"""A Transformer-XL-style plug-in: every layer attends over its own cache of the previous segment.

Layer l at segment s attends over [cache_l, current segment], where cache_l holds the last T inputs
that layer l has seen (its input at segment s-1, plus the tail of s-2 after a short segment), causal
within the current segment. The cache is layer l's state alone, so the model follows the layer-local
rule: cell (l, s) needs (l-1, s) and (l, s-1), and every anti-diagonal of cells can run as one step.
Run it: ``.venv/bin/python examples/transformer_xl_cache.py`` (checks diagonal == sequential, simulates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rmtsched.backends.protocol import LayerState
from rmtsched.backends.torch import RowMatmul
from rmtsched.backends.torch.kernels import aligned, rms_norm, rotary_apply, rotary_tables, silu_mul
from rmtsched.specs.cost import KernelWork


@dataclass(frozen=True)
class XLConfig:
    """Sizes of the model; ``segment_len`` T is also the cache length (Transformer-XL's mem_len = T)."""

    num_layers: int = 4
    d_model: int = 32
    num_heads: int = 2
    mlp_dim: int = 64
    vocab_size: int = 101
    segment_len: int = 8
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads


def init_params(config: XLConfig, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Seeded weights; per-layer tensors are stacked with the layer as dim 0 (``[L, out, in]``)."""
    generator = torch.Generator().manual_seed(seed)
    big_l, d, f = config.num_layers, config.d_model, config.mlp_dim

    def normal(*shape: int, fan_in: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator, dtype=torch.float64) / math.sqrt(fan_in)).to(dtype)

    def near_one(*shape: int) -> torch.Tensor:
        return (1.0 + 0.1 * torch.randn(*shape, generator=generator, dtype=torch.float64)).to(dtype)

    return {
        "embed": normal(config.vocab_size, d, fan_in=1),
        "final_norm": near_one(d),
        "attn_norm": near_one(big_l, d),
        "wq": normal(big_l, d, d, fan_in=d),
        "wkv": normal(big_l, 2 * d, d, fan_in=d),
        "wo": normal(big_l, d, d, fan_in=d),
        "mlp_norm": near_one(big_l, d),
        "w_gate_up": normal(big_l, 2 * f, d, fan_in=d),
        "w_down": normal(big_l, d, f, fan_in=f),
    }


class TransformerXLCache:
    """The plug-in: implements ``rmtsched.backends.protocol.RecurrentModel``.

    State (dim 0 = layer): ``cache`` ``[L, B, T, d]``, the last T inputs of the layer, right-aligned
    (newest last); ``valid`` ``[L]``, how many of those rows are real (0 before the first segment).
    Invalid rows are zeros and masked out of attention, so the first segment, a full one and a short
    last one all run the same kernels on the same shapes: one code path, whatever the schedule.
    """

    dependency_rule = "layer_local"
    uses_previous_output = False

    def __init__(
        self, config: XLConfig, *, seed: int = 0, dtype: torch.dtype = torch.float32, device: str = "cpu"
    ):
        self.config = config
        self.num_layers = config.num_layers
        self.segment_len = config.segment_len
        self.dtype, self.device = dtype, torch.device(device)
        # Drawn on the CPU, then moved: the same seed gives the same weights on every device.
        self.params = {name: value.to(self.device) for name, value in init_params(config, seed, dtype).items()}
        self.matmul = RowMatmul("auto")  # every row gets the bits of the width-1 GEMM

    def init_state(self, batch_size: int) -> LayerState:
        c = self.config
        cache_shape = (c.num_layers, batch_size, c.segment_len, c.d_model)
        return {
            "cache": torch.zeros(cache_shape, dtype=self.dtype, device=self.device),
            "valid": torch.zeros(c.num_layers, dtype=torch.int64, device=self.device),
        }

    def segment_input(self, segment: int, inputs: torch.Tensor, previous_output: torch.Tensor | None) -> torch.Tensor:
        if inputs.dtype in (torch.int32, torch.int64):
            return self.params["embed"][inputs.to(self.device)]
        return inputs.to(device=self.device, dtype=self.dtype)

    def segment_output(self, hidden: torch.Tensor) -> torch.Tensor:
        return rms_norm(hidden, self.params["final_norm"], self.config.norm_eps)

    def forward_layers(self, hidden: torch.Tensor, layers: range, state: LayerState) -> torch.Tensor:
        """Layers ``layers`` on ``hidden`` ``[w, B, n, d]`` (row i = layer ``layers[i]``), n <= T."""
        c, p, rows = self.config, self.params, slice(layers.start, layers.stop)
        w, batch, n, d = hidden.shape
        cache, valid = state["cache"][rows], state["valid"][rows]
        context = torch.cat((cache, hidden), dim=2)  # [w, B, T + n, d]: the keys' and values' source

        x = rms_norm(context, p["attn_norm"][rows].view(w, 1, 1, d), c.norm_eps)
        attn = self._attention(x, valid, n, rows)
        hidden = hidden + self.matmul.linear(attn, p["wo"][rows]).view(w, batch, n, d)

        x = rms_norm(hidden, p["mlp_norm"][rows].view(w, 1, 1, d), c.norm_eps)
        gate_up = self.matmul.linear(x.reshape(w, batch * n, d), p["w_gate_up"][rows])
        mlp = self.matmul.linear(silu_mul(gate_up[..., : c.mlp_dim], gate_up[..., c.mlp_dim :]), p["w_down"][rows])
        hidden = hidden + mlp.view(w, batch, n, d)

        # New cache: the last T rows of [old cache, this input]; valid grows by n up to T.
        cache.copy_(context[:, :, n:])
        valid.add_(n).clamp_(max=c.segment_len)
        return hidden

    def _attention(self, x: torch.Tensor, valid: torch.Tensor, n: int, rows: slice) -> torch.Tensor:
        """Multi-head attention of the n current tokens over the T + n context; ``[w, B * n, d]`` out."""
        c, p = self.config, self.params
        w, batch, ctx, d = x.shape
        heads, hd, cached = c.num_heads, c.head_dim, ctx - n
        q = self.matmul.linear(x[:, :, cached:].reshape(w, batch * n, d), p["wq"][rows]).view(w, batch, n, heads, hd)
        kv = self.matmul.linear(x.reshape(w, batch * ctx, d), p["wkv"][rows]).view(w, batch, ctx, 2 * heads, hd)
        # Rotary positions 0..T+n-1 over the context window: relative distances are what matter.
        cos, sin = (t[:, None, :] for t in rotary_tables(ctx, hd, c.rope_theta, x.dtype, x.device))
        q = rotary_apply(q, cos[cached:], sin[cached:]).transpose(2, 3)
        k = rotary_apply(kv[..., :heads, :], cos, sin).transpose(2, 3)
        v = kv[..., heads:, :].transpose(2, 3)
        mask = attention_mask(valid, cached, n)
        out = x.new_empty(w, batch, n, heads, hd)
        # One SDPA call per row on 64-byte-aligned operands, i.e. exactly the width-1 call: SDPA over the
        # stacked rows is not batch-invariant, and its result depends on where an operand starts.
        for qi, ki, vi, mi, oi in zip(*(t.unbind(0) for t in (q, k, v, mask, out)), strict=True):
            result = F.scaled_dot_product_attention(aligned(qi), aligned(ki), aligned(vi), attn_mask=mi)
            oi.transpose(1, 2).copy_(result)
        return out.view(w, batch * n, d)

    def cell_kernels(self, tokens: int) -> list[KernelWork]:
        return xl_cell_kernels(self.config, tokens, self.params["wq"].element_size())


def attention_mask(valid: torch.Tensor, cached: int, n: int) -> torch.Tensor:
    """``[w, n, cached + n]`` booleans: query i sees the row's valid cache rows and current tokens <= i."""
    key = torch.arange(cached + n, device=valid.device)
    query = cached + torch.arange(n, device=valid.device)
    causal = key[None, :] <= query[:, None]
    in_cache = key[None, :] >= cached - valid[:, None]  # right-aligned: the last ``valid`` cache rows
    return causal[None] & in_cache[:, None, :]


def _gemm(name: str, m: int, k: int, n: int, nbytes: int) -> KernelWork:
    return KernelWork(name, 2.0 * m * k * n, weight_bytes=k * n * nbytes, activation_bytes=(m * k + m * n) * nbytes)


def _vector(name: str, elements: int, flops_per_element: float, nbytes: int) -> KernelWork:
    return KernelWork(name, flops_per_element * elements, activation_bytes=2 * elements * nbytes, matmul=False)


def xl_cell_kernels(config: XLConfig, tokens: int, dtype_bytes: int) -> list[KernelWork]:
    """One cell (one layer, a segment of ``tokens``), batch 1: K/V are recomputed over T + tokens rows."""
    n, ctx, d, f, b = tokens, config.segment_len + tokens, config.d_model, config.mlp_dim, dtype_bytes
    return [
        _vector("attn_norm", ctx * d, 4, b),
        _gemm("q_proj", n, d, d, b),
        _gemm("kv_proj", ctx, d, 2 * d, b),
        _vector("rotary", (n + ctx) * d, 3, b),
        KernelWork("attention", 4.0 * n * ctx * d, activation_bytes=(2 * n + 2 * ctx) * d * b),
        _gemm("o_proj", n, d, d, b),
        _vector("mlp_norm", n * d, 4, b),
        _gemm("gate_up_proj", n, d, 2 * f, b),
        _vector("silu_mul", n * f, 5, b),
        _gemm("down_proj", n, f, d, b),
        _vector("cache_update", config.segment_len * d, 1, b),
    ]


def _demo() -> None:
    """Diagonal vs sequential on CPU (bit-equal?), then the simulator's predictions (see plugin_demo.py)."""
    from plugin_demo import demo  # examples/ is on sys.path when this file runs as a script

    from rmtsched.sim import Workload

    model = TransformerXLCache(XLConfig(), seed=0)
    big = XLConfig(num_layers=16, d_model=2048, num_heads=16, mlp_dim=8192, segment_len=1024)
    what_if = Workload("xl-1b bf16", big.num_layers, lambda tokens: xl_cell_kernels(big, tokens, 2), dtype_bytes=2)
    demo(model, 13 * model.segment_len + 3, XLConfig().vocab_size, what_if, 131072, big.segment_len)


if __name__ == "__main__":
    _demo()
