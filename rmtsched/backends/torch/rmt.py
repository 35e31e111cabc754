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
from rmtsched.backends.torch.grad_rowmm import GradRowMatmul
from rmtsched.backends.torch.layers import llama_layers


class RMTModel(StackedModel):
    """Recurrent Memory Transformer with read/write memory tokens (global-memory DAG)."""

    uses_previous_output = True

    def segment_input(
        self, segment: int, inputs: torch.Tensor, previous_output: torch.Tensor | None
    ) -> torch.Tensor:
        tokens = self.embed(inputs)
        mem_tokens = self.spec.mem_tokens
        if mem_tokens == 0:
            return tokens
        if previous_output is None:
            memory = self.memory_tokens(tokens.shape[0])
        else:
            memory = self.final_norm(previous_output[:, previous_output.shape[1] - mem_tokens :])
        return torch.cat((memory, tokens, memory), dim=1)

    def segment_output(self, hidden: torch.Tensor) -> torch.Tensor:
        mem_tokens = self.spec.mem_tokens
        return self.final_norm(hidden[:, mem_tokens : hidden.shape[1] - mem_tokens])

    def forward_layers(self, hidden: torch.Tensor, layers: range, state: LayerState) -> torch.Tensor:
        return llama_layers(hidden, self.params, self._rows(layers), self.spec, self.rope, self.matmul)

    def train_layers(
        self,
        hidden: torch.Tensor,
        params: Mapping[str, torch.Tensor],
        state: torch.Tensor | None,
        written: torch.Tensor,
        matmul: GradRowMatmul,
    ) -> tuple[torch.Tensor, None]:
        """``forward_layers`` for autograd on rows ``params[*]`` (leaves ``[w, ...]``); RMT has no layer state."""
        return llama_layers(hidden, params, slice(0, hidden.shape[0]), self.spec, self.rope, matmul), None
