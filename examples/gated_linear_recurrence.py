"""A chunked gated linear recurrence plug-in (gated-linear-attention-like): a matrix state per layer.

Layer l keeps, per head, a state S_l (d_k x d_v) across segments. Token t with query q_t, key k_t, value
v_t and a data-dependent per-key-channel decay alpha_t in (0, 1) does S <- diag(alpha_t) S + k_t v_t^T
and reads o_t = S^T q_t. Inside a segment this runs chunk by chunk (C tokens): an intra-chunk causal part
computed like attention plus an inter-chunk read of the state, then one state update per chunk. S_l is
layer l's state alone, so the model follows the layer-local rule and every anti-diagonal is one step.
Run it: ``.venv/bin/python examples/gated_linear_recurrence.py`` (checks diagonal == sequential, simulates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rmtsched.backends.protocol import LayerState
from rmtsched.backends.torch import RowMatmul
from rmtsched.backends.torch.grad_rowmm import GradRowMatmul, shift_rows
from rmtsched.backends.torch.kernels import rms_norm, silu_mul
from rmtsched.specs.cost import KernelWork


@dataclass(frozen=True)
class GLRConfig:
    """Sizes; ``max_decay`` caps -log(alpha) per token so a chunk's decay factors stay in range."""

    num_layers: int = 4
    d_model: int = 32
    num_heads: int = 2
    key_dim: int = 8
    value_dim: int = 16
    mlp_dim: int = 64
    vocab_size: int = 101
    segment_len: int = 16
    chunk_len: int = 4
    max_decay: float = 4.0
    norm_eps: float = 1e-5

    @property
    def in_features(self) -> int:
        """Width of the fused input projection: q, k, decay (H d_k each), v, output gate (H d_v each)."""
        return self.num_heads * (3 * self.key_dim + 2 * self.value_dim)


def init_params(config: GLRConfig, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Seeded weights; per-layer tensors are stacked with the layer as dim 0 (``[L, out, in]``)."""
    generator = torch.Generator().manual_seed(seed)
    big_l, d, f = config.num_layers, config.d_model, config.mlp_dim
    hv = config.num_heads * config.value_dim

    def normal(*shape: int, fan_in: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator, dtype=torch.float64) / math.sqrt(fan_in)).to(dtype)

    def near_one(*shape: int) -> torch.Tensor:
        return (1.0 + 0.1 * torch.randn(*shape, generator=generator, dtype=torch.float64)).to(dtype)

    # Decay bias: -log(alpha) starts between 0.02 and 0.5 per token (memories of ~2 to ~50 tokens).
    rates = 0.02 + 0.48 * torch.rand(big_l, config.num_heads * config.key_dim, generator=generator, dtype=torch.float64)
    return {
        "embed": normal(config.vocab_size, d, fan_in=1),
        "final_norm": near_one(d),
        "mix_norm": near_one(big_l, d),
        "w_in": normal(big_l, config.in_features, d, fan_in=d),
        "decay_bias": rates.log().to(dtype),
        "w_out": normal(big_l, d, hv, fan_in=hv),
        "mlp_norm": near_one(big_l, d),
        "w_gate_up": normal(big_l, 2 * f, d, fan_in=d),
        "w_down": normal(big_l, d, f, fan_in=f),
    }


class GatedLinearRecurrence:
    """The plug-in: implements ``rmtsched.backends.protocol.RecurrentModel``.

    State (dim 0 = layer): ``S`` ``[L, B, H, d_k, d_v]``, zero at the start of a sequence. A short last
    segment just has a shorter last chunk; every row of a ``forward_layers`` call has the same length.
    """

    dependency_rule = "layer_local"
    uses_previous_output = False

    def __init__(
        self, config: GLRConfig, *, seed: int = 0, dtype: torch.dtype = torch.float32, device: str = "cpu"
    ):
        self.config = config
        self.num_layers = config.num_layers
        self.segment_len = config.segment_len
        self.dtype, self.device = dtype, torch.device(device)
        # Drawn on the CPU, then moved: the same seed gives the same weights on every device.
        self.params = {name: value.to(self.device) for name, value in init_params(config, seed, dtype).items()}
        self.matmul = RowMatmul("auto")  # every row gets the bits of the width-1 GEMM (aligned, per-row)
        self.grad_matmul = GradRowMatmul(self.matmul)  # the same GEMMs for autograd, backward rows exact too

    def init_state(self, batch_size: int) -> LayerState:
        c = self.config
        shape = (c.num_layers, batch_size, c.num_heads, c.key_dim, c.value_dim)
        return {"S": torch.zeros(shape, dtype=self.dtype, device=self.device)}

    def segment_input(self, segment: int, inputs: torch.Tensor, previous_output: torch.Tensor | None) -> torch.Tensor:
        if inputs.dtype in (torch.int32, torch.int64):
            return self.params["embed"][inputs.to(self.device)]
        return inputs.to(device=self.device, dtype=self.dtype)

    def segment_output(self, hidden: torch.Tensor) -> torch.Tensor:
        return rms_norm(hidden, self.params["final_norm"], self.config.norm_eps)

    def forward_layers(self, hidden: torch.Tensor, layers: range, state: LayerState) -> torch.Tensor:
        """Layers ``layers`` on ``hidden`` ``[w, B, n, d]`` (row i = layer ``layers[i]``)."""
        rows = slice(layers.start, layers.stop)
        hidden, new_state = self._layers(hidden, self.params, rows, state["S"][rows], self.matmul)
        state["S"][rows].copy_(new_state)
        return hidden

    # -- training (``rmtsched.backends.protocol.TrainableModel``) ----------------------------------------
    train_layer_params = ("mix_norm", "w_in", "decay_bias", "w_out", "mlp_norm", "w_gate_up", "w_down")

    def train_state(self, batch_size: int) -> torch.Tensor:
        c = self.config
        return torch.zeros(batch_size, c.num_heads, c.key_dim, c.value_dim, dtype=self.dtype, device=self.device)

    def train_segment_input(self, weights, inputs: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        return weights["embed"][inputs]

    def train_layers(self, hidden: torch.Tensor, weights, state: torch.Tensor | None, written: torch.Tensor):
        """``forward_layers``' code on leaves: the same ``_layers`` with ``GradRowMatmul`` (row-exact backward)."""
        return self._layers(hidden, weights, slice(0, hidden.shape[0]), state, self.grad_matmul)

    def train_logits(self, weights, hidden: torch.Tensor) -> torch.Tensor:
        """Logits through the embedding table (a tied head): ``segment_output`` from ``weights``."""
        return self.grad_matmul.dense(rms_norm(hidden, weights["final_norm"], self.config.norm_eps), weights["embed"])

    # -- the layers, one code path for inference and training --------------------------------------------
    def _layers(
        self, hidden: torch.Tensor, p, rows: slice, state: torch.Tensor, matmul
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layers ``p[*][rows]`` on ``hidden`` ``[w, B, n, d]`` with states ``[w, B, H, d_k, d_v]``; returns the
        new hidden and states. Out of place throughout, so autograd can follow it."""
        c = self.config
        w, batch, n, d = hidden.shape
        heads, dk, dv = c.num_heads, c.key_dim, c.value_dim

        x = rms_norm(hidden, p["mix_norm"][rows].view(w, 1, 1, d), c.norm_eps)
        proj = matmul.linear(x.view(w, batch * n, d), p["w_in"][rows]).view(w, batch, n, -1)
        q, k, log_decay, v, gate = proj.split([heads * dk, heads * dk, heads * dk, heads * dv, heads * dv], dim=-1)
        bias = p["decay_bias"][rows].view(w, 1, 1, heads * dk)
        biased = shift_rows(log_decay, bias) if bias.requires_grad else log_decay + bias  # a bias per row
        # -log(alpha) = min(exp(a + bias), max_decay): exp, add and clamp are batch-invariant element-wise ops.
        log_decay = torch.exp(biased).clamp(max=c.max_decay).neg()
        q, k, log_decay, v = (per_head(t, heads) for t in (q * dk**-0.5, k, log_decay, v))

        mixed, state = self._recurrence(q, k, v, log_decay, state.reshape(w, batch * heads, dk, dv), matmul)
        mixed = mixed.view(w, batch, heads, n, dv).transpose(2, 3)  # [w, B, n, H, d_v]
        mixed = F.rms_norm(mixed, (dv,), eps=c.norm_eps).reshape(w, batch, n, heads * dv)
        out = matmul.linear(silu_mul(gate, mixed).view(w, batch * n, heads * dv), p["w_out"][rows])
        hidden = hidden + out.view(w, batch, n, d)

        x = rms_norm(hidden, p["mlp_norm"][rows].view(w, 1, 1, d), c.norm_eps)
        gate_up = matmul.linear(x.view(w, batch * n, d), p["w_gate_up"][rows])
        mlp = matmul.linear(silu_mul(gate_up[..., : c.mlp_dim], gate_up[..., c.mlp_dim :]), p["w_down"][rows])
        return hidden + mlp.view(w, batch, n, d), state.view(w, batch, heads, dk, dv)

    def _recurrence(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, state: torch.Tensor, mm
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Chunked gated linear attention over ``[w, B*H, n, *]`` from ``state`` ``[w, B*H, d_k, d_v]``;
        returns the outputs and the state after the segment.

        In a chunk, with b_t = sum_{j <= t} log alpha_j (per key channel) from the chunk's start:
        o_t = sum_{j <= t} (q_t e^{b_t}) . (k_j e^{-b_j}) v_j + (q_t e^{b_t})^T S, and at its end
        S <- e^{b_C} S + sum_j (k_j e^{b_C - b_j}) v_j^T. |b| <= C max_decay keeps e^{-b} finite.
        """
        n, outputs = q.shape[2], []
        for start in range(0, n, self.config.chunk_len):
            chunk = slice(start, min(start + self.config.chunk_len, n))
            qc, kc, vc = q[:, :, chunk], k[:, :, chunk], v[:, :, chunk]
            b = log_decay[:, :, chunk].cumsum(dim=2)
            q_decayed = qc * b.exp()
            scores = mm.batched(q_decayed, (kc * b.neg().exp()).transpose(2, 3))
            scores = scores * causal_mask(scores.shape[-1], scores.dtype, scores.device)
            outputs.append(mm.batched(scores, vc) + mm.batched(q_decayed, state))
            b_last = b[:, :, -1:]
            state = mm.accumulate(state * b_last.exp().transpose(2, 3), (kc * (b_last - b).exp()).transpose(2, 3), vc)
        return torch.cat(outputs, dim=2), state

    def cell_kernels(self, tokens: int) -> list[KernelWork]:
        return glr_cell_kernels(self.config, tokens, self.params["w_in"].element_size())


def per_head(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[w, B, n, H * e]`` -> ``[w, B * H, n, e]`` (contiguous): one inner batch entry per head."""
    w, batch, n, width = x.shape
    return x.view(w, batch, n, heads, width // heads).transpose(2, 3).reshape(w, batch * heads, n, width // heads)


def causal_mask(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Lower-triangular ones ``[size, size]``: token t reads tokens j <= t of its chunk."""
    return torch.ones(size, size, dtype=dtype, device=device).tril_()


def _gemm(name: str, m: int, k: int, n: int, nbytes: int, weights: bool = True) -> KernelWork:
    return KernelWork(
        name, 2.0 * m * k * n, weight_bytes=k * n * nbytes if weights else 0.0,
        activation_bytes=(m * k + m * n + (0 if weights else k * n)) * nbytes,
    )


def _vector(name: str, elements: int, flops_per_element: float, nbytes: int) -> KernelWork:
    return KernelWork(name, flops_per_element * elements, activation_bytes=2 * elements * nbytes, matmul=False)


def glr_cell_kernels(config: GLRConfig, tokens: int, dtype_bytes: int) -> list[KernelWork]:
    """One cell (one layer, a segment of ``tokens``), batch 1; each chunk launches its own kernels."""
    d, f, b, h = config.d_model, config.mlp_dim, dtype_bytes, config.num_heads
    dk, dv = config.key_dim, config.value_dim
    kernels = [
        _vector("mix_norm", tokens * d, 4, b),
        _gemm("in_proj", tokens, d, config.in_features, b),
        _vector("decay_gate", tokens * h * dk, 3, b),
    ]
    for start in range(0, tokens, config.chunk_len):
        size = min(config.chunk_len, tokens - start)
        kernels += [
            _vector("chunk_decays", size * h * dk, 6, b),
            _gemm("intra_scores", h * size, dk, size, b, weights=False),
            _gemm("intra_values", h * size, size, dv, b, weights=False),
            _gemm("state_read", h * size, dk, dv, b, weights=False),
            _gemm("state_update", h * dk, size, dv, b, weights=False),
        ]
    return [
        *kernels,
        _vector("head_norm_gate", tokens * h * dv, 8, b),
        _gemm("out_proj", tokens, h * dv, d, b),
        _vector("mlp_norm", tokens * d, 4, b),
        _gemm("gate_up_proj", tokens, d, 2 * f, b),
        _vector("silu_mul", tokens * f, 5, b),
        _gemm("down_proj", tokens, f, d, b),
    ]


def _demo() -> None:
    """Diagonal vs sequential on CPU (bit-equal?), then the simulator's predictions (see plugin_demo.py)."""
    from plugin_demo import demo  # examples/ is on sys.path when this file runs as a script

    from rmtsched.sim import Workload

    model = GatedLinearRecurrence(GLRConfig(), seed=0)
    big = GLRConfig(num_layers=24, d_model=2048, num_heads=16, key_dim=128, value_dim=128, mlp_dim=5632,
                    segment_len=2048, chunk_len=64)
    what_if = Workload("glr-1b bf16", big.num_layers, lambda tokens: glr_cell_kernels(big, tokens, 2), dtype_bytes=2)
    demo(model, 11 * model.segment_len + 5, GLRConfig().vocab_size, what_if, 131072, big.segment_len)


if __name__ == "__main__":
    _demo()
