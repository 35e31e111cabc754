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

import torch

from rmtsched.backends.protocol import LayerState
from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.kernels import dpfp_features, l2_normalize, sigmoid
from rmtsched.backends.torch.layers import llama_layers

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
        tokens = self.embed(inputs)
        if self.spec.mem_tokens == 0:
            return tokens
        return torch.cat((tokens, self.memory_tokens(tokens.shape[0])), dim=1)  # [B, T + M, d]

    def segment_output(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.final_norm(hidden[:, : hidden.shape[1] - self.spec.mem_tokens])  # [B, T, d]

    def forward_layers(self, hidden: torch.Tensor, layers: range, state: LayerState) -> torch.Tensor:
        rows = self._rows(layers)
        assoc = state["assoc"][rows]
        hidden = hidden + self._read(hidden, rows, assoc)
        hidden = llama_layers(hidden, self.params, rows, self.spec, self.rope, self.matmul)
        if self.spec.mem_tokens:
            self._write(hidden[:, :, hidden.shape[2] - self.spec.mem_tokens :], rows, assoc, state["written"][rows])
        return hidden

    def read_memory(self, hidden: torch.Tensor, layers: range, state: LayerState) -> torch.Tensor:
        """The associative read's addition for ``hidden`` ``[w, B, n, d]`` before ``layers`` (no write).

        Generation decodes with the memory read on and no writes, outside ``forward_layers``.
        """
        rows = self._rows(layers)
        return self._read(hidden, rows, state["assoc"][rows])

    # -- associative memory ---------------------------------------------------------------------------
    def _features(self, keys: torch.Tensor) -> torch.Tensor:
        phi = dpfp_features(keys, self.spec.dpfp_nu)
        return l2_normalize(phi) if self.spec.armt_variant == "normalized" else phi

    def _read(self, hidden: torch.Tensor, rows: slice, assoc: torch.Tensor) -> torch.Tensor:
        w, batch, n, d = hidden.shape
        query = self.matmul.linear(hidden.reshape(w, batch * n, d), self.params["mem_wq"][rows])  # [w, B n, m]
        phi = self._features(query).view(w, batch, n, -1)  # [w, B, n, d_phi]
        num_den = self.matmul.batched(phi, assoc)  # [w, B, n, d + 1]: A^T phi | z . phi
        return num_den[..., :d] / (num_den[..., d:] + READ_EPS)  # [w, B, n, d]

    def _write(self, mem: torch.Tensor, rows: slice, assoc: torch.Tensor, written: torch.Tensor) -> None:
        w, batch, m, d = mem.shape
        key_dim = self.spec.mem_key_dim
        kvb = self.matmul.linear(mem.reshape(w, batch * m, d), self.params["mem_wkvb"][rows])  # [w, B M, m + d + 1]
        kvb = kvb.view(w, batch, m, -1)  # [w, B, M, m + d + 1]: key | value | beta logit
        phi = self._features(kvb[..., :key_dim])  # [w, B, M, d_phi]
        value = kvb[..., key_dim : key_dim + d]  # [w, B, M, d]
        beta = sigmoid(kvb[..., key_dim + d :] + self.params["mem_b_bias"][rows].view(w, 1, 1, 1))  # [w, B, M, 1]
        num_den = self.matmul.batched(phi, assoc)  # [w, B, M, d + 1]
        den = num_den[..., d:] + READ_EPS  # [w, B, M, 1]
        v_prev = num_den[..., :d] / den  # [w, B, M, d]
        norm_sq = torch.linalg.vector_norm(phi, dim=-1, keepdim=True).square_().add_(
            GAMMA_EPS[self.spec.armt_variant]
        )
        gamma = (1.0 - den / norm_sq).clamp_(0.0, 1.0)  # [w, B, M, 1]
        gamma = torch.where(written.view(w, 1, 1, 1), gamma, 1.0)
        update = torch.cat((beta * (value - v_prev), gamma), dim=-1)  # [w, B, M, d + 1]
        self.matmul.accumulate_(assoc, phi.transpose(2, 3), update)  # assoc [w, B, d_phi, d + 1] += phi^T update
        written.fill_(True)
