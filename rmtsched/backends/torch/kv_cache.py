"""A key/value cache for the LLaMA layers, and the loop that runs new tokens through every layer with it.

Decoding and the full-attention baseline feed tokens a block at a time: ``llama_layers(..., cache=cache)``
stores the block's keys and values after the ones cached for its rows, gives the block the rotary
positions that follow them, and lets it attend to everything cached and causally to itself. Storage is
allocated once for ``capacity`` tokens per layer, so a block costs one copy of its own keys, not a regrowth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from rmtsched.backends.torch.layers import llama_layers

if TYPE_CHECKING:
    from rmtsched.backends.torch.base import StackedModel

# ``read(hidden [1, B, n, d], layers)`` -> what a memory adds to ``hidden`` before ``layers`` (ARMT's read).
MemoryRead = Callable[[torch.Tensor, range], torch.Tensor]


class KVCache:
    """Keys and values ``[rows, B, kv_heads, capacity, head_dim]`` and how many tokens each row holds.

    Rows are indexed like the model's stacked parameters (``params[name][rows]``), one per layer.
    """

    def __init__(
        self, *, rows: int, batch_size: int, kv_heads: int, head_dim: int, capacity: int, dtype: torch.dtype,
        device: torch.device | str,
    ):
        if capacity <= 0:
            raise ValueError(f"KV cache capacity must be a positive number of tokens, got {capacity}")
        shape = (rows, batch_size, kv_heads, capacity, head_dim)
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.lengths = [0] * rows

    @classmethod
    def for_model(cls, model: StackedModel, batch_size: int, capacity: int) -> KVCache:
        """An empty cache for every layer ``model`` holds, in its dtype and on its device."""
        spec = model.spec
        return cls(rows=len(model.layers), batch_size=batch_size, kv_heads=spec.num_kv_heads,
                   head_dim=spec.head_dim, capacity=capacity, dtype=model.dtype, device=model.device)

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def past_tokens(self, rows: slice) -> int:
        """Tokens cached for ``rows``: the rotary offset of the next block (all rows must agree)."""
        lengths = set(self.lengths[rows])
        if len(lengths) != 1:
            raise ValueError(f"KV cache rows {rows} hold different token counts {self.lengths[rows]}")
        return lengths.pop()

    def append(self, rows: slice, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``keys``/``values`` ``[w, B, K, n, hd]`` after the tokens cached for ``rows``; return all of
        those rows' keys and values, ``[w, B, K, past + n, hd]`` views of the cache."""
        past = self.past_tokens(rows)
        end = past + keys.shape[3]
        if end > self.capacity:
            raise ValueError(f"KV cache holds {self.capacity} tokens per layer; {end} are needed")
        self.keys[rows, :, :, past:end] = keys
        self.values[rows, :, :, past:end] = values
        for row in range(*rows.indices(len(self.lengths))):
            self.lengths[row] = end
        return self.keys[rows, :, :, :end], self.values[rows, :, :, :end]


def cached_layers(
    model: StackedModel, hidden: torch.Tensor, cache: KVCache, read: MemoryRead | None = None
) -> torch.Tensor:
    """Every layer of ``model`` on a block of new tokens ``[B, n, d]`` after those in ``cache``; returns the
    last layer's output ``[B, n, d]``. ``read`` (if given) adds a memory read before each layer.

    Layers run one at a time (width 1): a token's layer l needs its layer l - 1, whatever the schedule.
    """
    if model.layers != range(model.num_layers):
        raise ValueError(f"decoding needs a model holding all {model.num_layers} layers, got a slice {model.layers}")
    hidden = hidden.unsqueeze(0)  # (1, B, n, d)
    for layer in model.layers:
        if read is not None:
            hidden = hidden + read(hidden, range(layer, layer + 1))
        hidden = llama_layers(hidden, model.params, slice(layer, layer + 1), model.spec, model.rope, model.matmul,
                              cache=cache)
    return hidden[0]
