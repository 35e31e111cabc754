"""The full-attention baseline: the same LLaMA weights with no memory, causal attention over the whole input.

This is what the Diagonal Batching paper compares ARMT against (design notes section 4): no memory tokens,
no memory reads, every token attending to every earlier one. The input is fed in chunks through a KV
cache (a chunked prefill), so the activations held at once are one chunk's, plus the cache of N tokens'
keys and values; the attention work still grows as N^2. Outputs are the final-normed hidden states.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.kv_cache import KVCache, cached_layers
from rmtsched.errors import RmtschedError
from rmtsched.specs.run import FULL_ATTENTION_CHUNK_TOKENS

# Default chunk: large enough to run as fast as one pass (armt-small, 4,096 tokens, 1 thread on this CPU:
# chunks of 64 tokens took 1.5x as long as one pass, chunks of 1,024 the same), small enough that a chunk's
# activations (chunk x MLP width) stay far below the KV cache of a long input, even for 1B models.
DEFAULT_CHUNK_TOKENS = FULL_ATTENTION_CHUNK_TOKENS  # defined torch-free, for the CLI's help and the size guard

ChunkCallback = Callable[[int, torch.Tensor], None]


class FullAttentionError(RmtschedError, ValueError):
    """Bad full-attention input: inputs shape, chunk size, or a model slice."""


@dataclass(frozen=True)
class FullAttentionStats:
    """What the baseline did: tokens, chunks of ``chunk_tokens`` (the last may be shorter), and wall time."""

    tokens: int
    chunks: int
    chunk_tokens: int
    wall_s: float


def full_attention_forward(
    model: StackedModel,
    inputs: torch.Tensor,
    *,
    chunk_tokens: int | None = None,
    on_output: ChunkCallback | None = None,
) -> FullAttentionStats:
    """Run ``model``'s LLaMA layers without memory on ``inputs`` (token ids ``[B, N]`` or embeddings
    ``[B, N, d]``), ``chunk_tokens`` (default ``DEFAULT_CHUNK_TOKENS``) at a time.

    ``on_output(index, hidden)`` receives each chunk's final-normed hidden states ``[B, n, d]`` in order.
    The result equals one causal pass over all N tokens up to rounding (different kernel shapes).
    """
    chunk = DEFAULT_CHUNK_TOKENS if chunk_tokens is None else chunk_tokens
    _check(model, inputs, chunk)
    batch, num_tokens = inputs.shape[:2]
    inputs = inputs.to(model.device)
    start = time.perf_counter()
    with torch.inference_mode():
        cache = KVCache.for_model(model, batch, capacity=num_tokens)
        for index, first in enumerate(range(0, num_tokens, chunk)):
            hidden = cached_layers(model, model.embed(inputs[:, first : first + chunk]), cache)
            output = model.final_norm(hidden)
            if on_output is not None:
                on_output(index, output)
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    return FullAttentionStats(num_tokens, -(-num_tokens // chunk), chunk, time.perf_counter() - start)


def _check(model: StackedModel, inputs: torch.Tensor, chunk: int) -> None:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise FullAttentionError(f"chunk_tokens must be a positive integer, got {chunk!r}")
    if inputs.dim() not in (2, 3) or inputs.shape[1] == 0:
        raise FullAttentionError(
            f"inputs must be token ids [batch, tokens] or embeddings [batch, tokens, d_model] with at least one "
            f"token, got shape {list(inputs.shape)}"
        )
    if model.layers != range(model.num_layers):
        raise FullAttentionError(f"full attention needs all {model.num_layers} layers, got a slice {model.layers}")
