"""RMT: the original Recurrent Memory Transformer (global memory) on the same LLaMA layers.

A cell processes ``[read memory (M), segment (T), write memory (M)]``. Both memory blocks of segment 0
are the learned embeddings ``params["memory"]``; for segment s > 0 both are the write-memory outputs of
the LAST layer for segment s-1, after the final RMSNorm (the reference ``MemoryCell`` reads
``hidden_states[-1][:, -M:]``, which Hugging Face returns normalised). That edge from (L-1, s-1) to
(0, s) makes the DAG a single chain, so every schedule degrades to width 1; it still runs exactly.
No per-layer state; rotary positions restart at 0 each segment; attention is causal over all tokens.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from rmtsched.backends.protocol import LayerState
from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.layers import llama_layers


class RMTModel(StackedModel):
    """Recurrent Memory Transformer with read/write memory tokens (global-memory DAG)."""

    uses_previous_output = True

    def segment_input(
        self, segment: int, inputs: torch.Tensor, previous_output: torch.Tensor | None
    ) -> torch.Tensor:
        return self._with_memory(self.params, self.embed(inputs), previous_output)

    def train_segment_input(
        self, weights: Mapping[str, torch.Tensor], inputs: torch.Tensor, previous: torch.Tensor | None
    ) -> torch.Tensor:
        return self._with_memory(weights, weights["embed"][inputs], previous)

    def _with_memory(
        self, weights: Mapping[str, torch.Tensor], tokens: torch.Tensor, previous: torch.Tensor | None
    ) -> torch.Tensor:
        """``[read memory, tokens, write memory]``; memory = the last layer's normed write slots of s-1."""
        m = self.spec.mem_tokens
        if m == 0:
            return tokens
        if previous is None:
            memory = weights["memory"].expand(tokens.shape[0], -1, -1)
        else:
            memory = self.final_norm(previous[:, previous.shape[1] - m :], weights)
        return torch.cat((memory, tokens, memory), dim=1)  # [B, M + T + M, d]

    def output_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        m = self.spec.mem_tokens
        return hidden[:, m : hidden.shape[1] - m]

    def forward_layers(self, hidden: torch.Tensor, layers: range, state: LayerState) -> torch.Tensor:
        return llama_layers(hidden, self.params, self._rows(layers), self.spec, self.rope, self.matmul)

    def train_layers(
        self,
        hidden: torch.Tensor,
        params: Mapping[str, torch.Tensor],
        state: torch.Tensor | None,
        written: torch.Tensor,
    ) -> tuple[torch.Tensor, None]:
        """``forward_layers`` for autograd on rows ``params[*]`` (leaves ``[w, ...]``); RMT has no layer state."""
        rows = slice(0, hidden.shape[0])
        return llama_layers(hidden, params, rows, self.spec, self.rope, self.grad_matmul), None
