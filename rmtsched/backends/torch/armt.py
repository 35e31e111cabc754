"""ARMT: LLaMA layers with M memory tokens per segment and a per-layer associative memory.

We follow the published reference code (``AssociativeLayerWrapper`` in RodkinIvan/associative-
recurrent-memory-transformer, one memory head, ``use_denom=True``, ``correction=True``, no gating):

* Cell input: the segment's T token embeddings followed by the M learned memory embeddings
  (``params["memory"]``, the same every segment); rotary positions restart at 0 each segment;
  attention is causal over all T + M tokens.
* Read, before the layer, for every token h (memory tokens too): ``phi_q = phi(W_mq h)``,
  ``h <- h + A^T phi_q / (z . phi_q + 1e-5)``.
* Write, after the layer, from its M memory-token outputs m: ``phi_k = phi(W_mk m)``,
  ``v = W_mv m``, ``beta = sigmoid(W_mb m + b)``, ``den = z . phi_k + 1e-5``, ``v_prev = A^T phi_k / den``,
  ``gamma = clip(1 - den / (||phi_k||^2 + eps'), 0, 1)``; then ``A += sum_j beta_j phi_kj (v_j - v_prev_j)^T``
  and ``z += sum_j gamma_j phi_kj``. DPFP-nu: ``x = [relu(k), relu(-k)]``, ``phi = cat([x]*nu) *
  cat([roll(x, j) for j = 1..nu])``, so d_phi = 2 nu d_mem. A and z start at zero.

The two published variants (``spec.armt_variant``, design notes section 3): ``paper`` uses phi as DPFP
gives it and eps' = 1e-5; ``normalized`` L2-normalises phi (``x / max(||x||, 1e-12)``, as ``F.normalize``)
and uses eps' = 0. In a layer's first segment the reference skips the read (ours adds an exact 0, since
A = 0 gives 0 / 1e-5) and writes with gamma = 1 and v_prev = 0 (ours: v_prev = 0 exactly, gamma forced
to 1 by the per-layer ``written`` flag). One deliberate deviation: with M = 0 the reference slices
``out[:, -0:]`` and so writes from ALL tokens; we write nothing (M = 0 means no memory).

State (dim 0 = layer): ``assoc`` ``[L, B, d_phi, d + 1]`` holds A in columns 0..d-1 and z in column d,
so one GEMM gives a read's numerator and denominator and one GEMM updates both; ``written``
``[L]`` (bool) marks layers that have written at least once.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from rmtsched.backends.protocol import LayerState
from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.grad_rowmm import GradRowMatmul, shift_rows
from rmtsched.backends.torch.kernels import dpfp_features, l2_normalize, sigmoid
from rmtsched.backends.torch.layers import llama_layers
from rmtsched.backends.torch.rowmm import RowMatmul
from rmtsched.specs.model import ModelSpec

READ_EPS = 1e-5
# eps' in gamma's denominator, per variant.
GAMMA_EPS = {"paper": 1e-5, "normalized": 0.0}


class ARMTModel(StackedModel):
    """Associative Recurrent Memory Transformer (layer-local memory: the diagonal schedule is exact)."""

    uses_previous_output = False

    def init_state(self, batch_size: int) -> LayerState:
        spec = self.spec
        width = len(self.layers)
        return {
            "assoc": torch.zeros(
                width, batch_size, spec.phi_dim, spec.d_model + 1, dtype=self.dtype, device=self.device
            ),
            "written": torch.zeros(width, dtype=torch.bool, device=self.device),
        }

    def segment_input(
        self, segment: int, inputs: torch.Tensor, previous_output: torch.Tensor | None
    ) -> torch.Tensor:
        return self._with_memory(self.params, self.embed(inputs))

    def train_segment_input(
        self, weights: Mapping[str, torch.Tensor], inputs: torch.Tensor, previous: torch.Tensor | None
    ) -> torch.Tensor:
        return self._with_memory(weights, weights["embed"][inputs])

    def _with_memory(self, weights: Mapping[str, torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
        if self.spec.mem_tokens == 0:
            return tokens
        return torch.cat((tokens, weights["memory"].expand(tokens.shape[0], -1, -1)), dim=1)  # [B, T + M, d]

    def output_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden[:, : hidden.shape[1] - self.spec.mem_tokens]

    def train_state(self, batch_size: int) -> torch.Tensor:
        """A layer's A | z before segment 0: zeros ``[B, d_phi, d + 1]``."""
        spec = self.spec
        return torch.zeros(batch_size, spec.phi_dim, spec.d_model + 1, dtype=self.dtype, device=self.device)

    def forward_layers(self, hidden: torch.Tensor, layers: range, state: LayerState) -> torch.Tensor:
        rows = self._rows(layers)
        assoc, written = state["assoc"][rows], state["written"][rows]
        hidden, write = armt_layers(hidden, self.params, rows, self, self.matmul, assoc, written)
        if write is not None:
            self.matmul.accumulate_(assoc, *write)  # assoc [w, B, d_phi, d + 1] += phi^T update
            written.fill_(True)
        return hidden

    def train_layers(
        self,
        hidden: torch.Tensor,
        params: Mapping[str, torch.Tensor],
        state: torch.Tensor | None,
        written: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``forward_layers``' maths out of place for autograd: rows ``params[*]`` (leaves ``[w, ...]``) on
        ``hidden`` ``[w, B, n, d]`` with A | z ``state`` ``[w, B, d_phi, d + 1]``; returns the new hidden and
        state. ``written`` ``[w]`` marks rows whose layer has written before (segment > 0)."""
        rows, matmul = slice(0, hidden.shape[0]), self.grad_matmul
        hidden, write = armt_layers(hidden, params, rows, self, matmul, state, written)
        return hidden, state if write is None else matmul.accumulate(state, *write)

    def read_memory(self, hidden: torch.Tensor, layers: range, state: LayerState) -> torch.Tensor:
        """The associative read's addition for ``hidden`` ``[w, B, n, d]`` before ``layers`` (no write).

        Generation decodes with the memory read on and no writes, outside ``forward_layers``.
        """
        rows = self._rows(layers)
        return _read(hidden, self.params, rows, self.spec, self.matmul, state["assoc"][rows])


# -- associative memory (one code path for inference and training) -------------------------------------
Matmul = RowMatmul | GradRowMatmul


def armt_layers(
    hidden: torch.Tensor,
    params: Mapping[str, torch.Tensor],
    rows: slice,
    model: StackedModel,
    matmul: Matmul,
    assoc: torch.Tensor,
    written: torch.Tensor,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Read, decoder layer, and the write's two factors ``(phi^T, update)`` (None without memory tokens):
    the caller adds ``phi^T @ update`` to ``assoc``, in place (inference) or out of place (training)."""
    spec = model.spec
    hidden = hidden + _read(hidden, params, rows, spec, matmul, assoc)
    hidden = llama_layers(hidden, params, rows, spec, model.rope, matmul)
    if not spec.mem_tokens:
        return hidden, None
    return hidden, _write_terms(hidden[:, :, hidden.shape[2] - spec.mem_tokens :], params, rows, spec, matmul, assoc,
                                written)


def _features(keys: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    phi = dpfp_features(keys, spec.dpfp_nu)
    return l2_normalize(phi) if spec.armt_variant == "normalized" else phi


def _read(
    hidden: torch.Tensor, params: Mapping[str, torch.Tensor], rows: slice, spec: ModelSpec, matmul: Matmul,
    assoc: torch.Tensor,
) -> torch.Tensor:
    w, batch, n, d = hidden.shape
    query = matmul.linear(hidden.reshape(w, batch * n, d), params["mem_wq"][rows])  # [w, B n, m]
    phi = _features(query, spec).view(w, batch, n, -1)  # [w, B, n, d_phi]
    num_den = matmul.batched(phi, assoc)  # [w, B, n, d + 1]: A^T phi | z . phi
    return num_den[..., :d] / (num_den[..., d:] + READ_EPS)  # [w, B, n, d]


def _write_terms(
    mem: torch.Tensor, params: Mapping[str, torch.Tensor], rows: slice, spec: ModelSpec, matmul: Matmul,
    assoc: torch.Tensor, written: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    w, batch, m, d = mem.shape
    key_dim = spec.mem_key_dim
    kvb = matmul.linear(mem.reshape(w, batch * m, d), params["mem_wkvb"][rows])  # [w, B M, m + d + 1]
    kvb = kvb.view(w, batch, m, -1)  # [w, B, M, m + d + 1]: key | value | beta logit
    phi = _features(kvb[..., :key_dim], spec)  # [w, B, M, d_phi]
    value = kvb[..., key_dim : key_dim + d]  # [w, B, M, d]
    bias = params["mem_b_bias"][rows].view(w, 1, 1, 1)
    logit = kvb[..., key_dim + d :]
    beta = sigmoid(shift_rows(logit, bias) if bias.requires_grad else logit + bias)  # [w, B, M, 1]
    num_den = matmul.batched(phi, assoc)  # [w, B, M, d + 1]
    den = num_den[..., d:] + READ_EPS  # [w, B, M, 1]
    v_prev = num_den[..., :d] / den  # [w, B, M, d]
    norm = torch.linalg.vector_norm(phi, dim=-1, keepdim=True)
    eps = GAMMA_EPS[spec.armt_variant]
    if phi.requires_grad:  # out of place: autograd saved norm and the clamp's input
        gamma = (1.0 - den / (norm.square() + eps)).clamp(0.0, 1.0)
    else:
        gamma = (1.0 - den / norm.square_().add_(eps)).clamp_(0.0, 1.0)  # [w, B, M, 1]
    gamma = torch.where(written.view(w, 1, 1, 1), gamma, 1.0)
    update = torch.cat((beta * (value - v_prev), gamma), dim=-1)  # [w, B, M, d + 1]
    return phi.transpose(2, 3), update
