"""Greedy generation from an ARMT or RMT model, the way the reference code generates (design notes section 3).

The prompt is cut into segments as for a run. Every segment but the last goes through the memory with
any schedule (``execute``; each schedule leaves the same memory bits). The last segment and the new
tokens are then decoded with a KV cache and NO memory tokens, so nothing is written to the memory:

* ARMT: every layer reads its associative memory before it runs, on every token (``read_memory``).
* RMT: the last segment starts with its read memory (the previous segment's memory-token outputs),
  as the reference RMT's ``generate(write_mem=False)`` does; the layers have no per-layer memory.

Both built-in families put the M write-memory tokens last in a cell's input, so the decoded block is
that input without its last M tokens; rotary positions restart at 0 on the last segment, as in a run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import torch

from rmtsched.backends.protocol import LayerState
from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.executor import execute
from rmtsched.backends.torch.kv_cache import KVCache, MemoryRead, cached_layers
from rmtsched.errors import RmtschedError
from rmtsched.sched import Schedule, get_scheduler, graph_for_tokens, make_schedule, split_segments


class GenerationError(RmtschedError, ValueError):
    """Bad generation input: prompt shape or ids, token count, end-of-sequence id, or a model that cannot decode."""


@dataclass(frozen=True)
class GenerationResult:
    """What ``generate`` produced, and how long each part took.

    ``tokens`` ``[B, K]`` are the new ids (K <= max_new_tokens: fewer when every row hit the end-of-sequence
    id; a row that ended earlier is padded with that id, as Hugging Face does without a pad token);
    ``logits`` ``[B, K, V]`` are the logits each token was chosen from. ``memory_s`` is the prompt's
    full segments through the memory, ``prefill_s`` everything up to the first new token (``memory_s``
    included), ``decode_s[i]`` the step that produced token i + 1 (K - 1 entries).
    """

    tokens: torch.Tensor
    logits: torch.Tensor
    memory_s: float
    prefill_s: float
    decode_s: tuple[float, ...]


def generate(
    model: StackedModel,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    schedule: str | Schedule = "diagonal",
    eos_token_id: int | None = None,
) -> GenerationResult:
    """Greedy decoding (argmax of the logits) of up to ``max_new_tokens`` after ``prompt_ids`` ``[B, N]``.

    ``schedule`` (a scheduler name or a ``Schedule`` of the prompt's first S - 1 segments) orders the
    memory's work; the result does not depend on it. Runs under ``torch.inference_mode``.
    """
    _check_request(model, prompt_ids, max_new_tokens, eos_token_id)
    prompt = prompt_ids.to(model.device)
    batch, num_tokens = prompt.shape
    prefix_len = num_tokens - split_segments(num_tokens, model.segment_len)[-1]
    start = time.perf_counter()
    with torch.inference_mode():
        state, previous = _build_memory(model, prompt[:, :prefix_len], schedule)
        memory_s = _elapsed(model, start)
        block = model.segment_input(prefix_len // model.segment_len, prompt[:, prefix_len:], previous)
        block = block[:, : block.shape[1] - model.spec.mem_tokens]  # no write-memory tokens: no writes
        cache = KVCache.for_model(model, batch, capacity=block.shape[1] + max_new_tokens - 1)
        read = partial(model.read_memory, state=state) if hasattr(model, "read_memory") else None
        first = _next_logits(model, block, cache, read)
        prefill_s = _elapsed(model, start)
        tokens, logits, decode_s = _greedy(model, first, cache, read, max_new_tokens, eos_token_id)
    return GenerationResult(tokens, logits, memory_s, prefill_s, decode_s)


def _greedy(
    model: StackedModel, first: torch.Tensor, cache: KVCache, read: MemoryRead | None, max_new_tokens: int,
    eos_token_id: int | None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[float, ...]]:
    """Tokens ``[B, K]``, their logits ``[B, K, V]`` and each decode step's seconds, from the prefill's logits."""
    logits, tokens, decode_s = [first], [], []
    finished = torch.zeros(first.shape[0], dtype=torch.bool, device=first.device)
    while True:
        token = logits[-1].argmax(dim=-1)
        if eos_token_id is not None:
            token = torch.where(finished, eos_token_id, token)
            finished |= token == eos_token_id
        tokens.append(token)
        if len(tokens) == max_new_tokens or bool(finished.all()):
            return torch.stack(tokens, dim=1), torch.stack(logits, dim=1), tuple(decode_s)
        start = time.perf_counter()
        logits.append(_next_logits(model, model.embed(token[:, None]), cache, read))
        decode_s.append(_elapsed(model, start))


def _build_memory(
    model: StackedModel, prefix: torch.Tensor, schedule: str | Schedule
) -> tuple[LayerState, torch.Tensor | None]:
    """The memory after the prompt's full segments: the layers' state, and (RMT) the raw last output."""
    if isinstance(schedule, str):
        get_scheduler(schedule)  # an unknown name is an error even when the prompt fits in one segment
    if prefix.shape[1] == 0:
        return model.init_state(prefix.shape[0]), None
    if isinstance(schedule, str):
        schedule = make_schedule(graph_for_tokens(model, prefix.shape[1]), schedule)
    result = execute(model, prefix, schedule, collect_outputs=False)
    return result.final_state, result.last_hidden if model.uses_previous_output else None


def _next_logits(model: StackedModel, block: torch.Tensor, cache: KVCache, read: MemoryRead | None) -> torch.Tensor:
    """Logits ``[B, V]`` after the block ``[B, n, d]`` of embeddings that follows the cached tokens."""
    hidden = cached_layers(model, block, cache, read)
    return model.logits(model.final_norm(hidden[:, -1:]))[:, 0]


def _elapsed(model: StackedModel, start: float) -> float:
    """Seconds since ``start``, after the device has finished the work queued so far."""
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    return time.perf_counter() - start


def _check_request(
    model: StackedModel, prompt_ids: torch.Tensor, max_new_tokens: int, eos_token_id: int | None
) -> None:
    if not isinstance(model, StackedModel):
        raise GenerationError(f"generation needs a built-in ARMT/RMT model (StackedModel), got {type(model).__name__}")
    vocab = model.spec.vocab_size
    if model.layers != range(model.num_layers):
        raise GenerationError(f"generation needs a model holding all {model.num_layers} layers, got {model.layers}")
    if not isinstance(prompt_ids, torch.Tensor) or prompt_ids.dim() != 2 or prompt_ids.shape[1] == 0:
        shape = list(prompt_ids.shape) if isinstance(prompt_ids, torch.Tensor) else type(prompt_ids).__name__
        raise GenerationError(f"prompt ids must be a [batch, tokens] tensor with at least one token, got {shape}")
    if prompt_ids.dtype not in (torch.int32, torch.int64):
        raise GenerationError(f"prompt ids must be integer token ids (int32/int64), got {prompt_ids.dtype}")
    low, high = int(prompt_ids.min()), int(prompt_ids.max())
    if low < 0 or high >= vocab:
        bad = low if low < 0 else high
        raise GenerationError(f"prompt holds token id {bad}, outside the vocabulary 0..{vocab - 1}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise GenerationError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if eos_token_id is not None and not (isinstance(eos_token_id, int) and 0 <= eos_token_id < vocab):
        raise GenerationError(f"eos_token_id must be a token id in 0..{vocab - 1}, got {eos_token_id!r}")
