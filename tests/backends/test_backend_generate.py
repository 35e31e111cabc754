"""Generation with a KV cache equals a naive loop that recomputes the last segment at every step.

The naive loop is written here from the design notes (section 3) on the plain-PyTorch ARMT/RMT of
``test_backend_reference`` (``F.linear``, an explicit masked softmax, its own memory maths): the prompt's
full segments build the memory; then, for every new token, the last segment plus the tokens generated so
far run through every layer from scratch (no cache), ARMT reading its memory before each layer, RMT with
the read memory in front; no memory tokens, no writes. Greedy argmax. fp64, logits within 1e-10.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from backend_helpers import every_schedule, random_inputs
from naive_reference import SPECS, llama_layer, naive_armt, phi, rms

from rmtsched.backends.torch import build_model
from rmtsched.backends.torch.generate import GenerationError, generate
from rmtsched.backends.torch.kv_cache import KVCache
from rmtsched.backends.torch.layers import llama_layers
from rmtsched.errors import ScheduleError
from rmtsched.sched import graph_for_tokens, make_schedule
from rmtsched.specs.model import ModelSpec

TOLERANCE = 1e-10
NEW_TOKENS = 6


def naive_memory(spec: ModelSpec, p: dict, prefix: torch.Tensor) -> tuple[list, list, torch.Tensor]:
    """After the prompt's full segments: ARMT's (A, z) per layer (None where never written) and RMT's read
    memory for the next segment ``[B, M, d]``."""
    batch = prefix.shape[0]
    if spec.family == "armt":
        if prefix.shape[1] == 0 or spec.mem_tokens == 0:
            return [None] * spec.num_layers, [None] * spec.num_layers, None
        _, big_a, z = naive_armt(spec, p, prefix)
        return big_a, z, None
    memory = p["memory"].expand(batch, -1, -1)
    for start in range(0, prefix.shape[1], spec.segment_len):
        x = torch.cat([memory, p["embed"][prefix[:, start : start + spec.segment_len]], memory], dim=1)
        for layer in range(spec.num_layers):
            x = llama_layer(spec, p, layer, x)
        memory = rms(x, p["final_norm"], spec.rms_norm_eps)[:, x.shape[1] - spec.mem_tokens :]
    return [None] * spec.num_layers, [None] * spec.num_layers, memory


def naive_generate(spec: ModelSpec, p: dict, prompt: torch.Tensor, new_tokens: int):
    """(tokens [B, K], logits [B, K, V]) by recomputing the whole last segment at every step."""
    prefix_len = (prompt.shape[1] - 1) // spec.segment_len * spec.segment_len
    big_a, z, read_memory = naive_memory(spec, p, prompt[:, :prefix_len])
    sequence = prompt[:, prefix_len:]
    tokens, logits = [], []
    for _ in range(new_tokens):
        x = p["embed"][sequence]
        if read_memory is not None:
            x = torch.cat([read_memory, x], dim=1)
        for layer in range(spec.num_layers):
            if big_a[layer] is not None:
                mq = phi(spec, F.linear(x, p["mem_wq"][layer]))
                x = x + (mq @ big_a[layer]) / ((mq @ z[layer][..., None]) + 1e-5)
            x = llama_layer(spec, p, layer, x)
        head = p["embed"] if spec.tie_word_embeddings else p["lm_head"]
        step_logits = F.linear(rms(x[:, -1], p["final_norm"], spec.rms_norm_eps), head)
        token = step_logits.argmax(-1)
        tokens.append(token)
        logits.append(step_logits)
        sequence = torch.cat([sequence, token[:, None]], dim=1)
    return torch.stack(tokens, 1), torch.stack(logits, 1)


def prompt_lengths(spec: ModelSpec) -> dict[str, int]:
    t = spec.segment_len
    return {"mid-segment": 3 * t + 2, "on-boundary": 3 * t, "one-segment": t - 2, "one-full-segment": t}


@pytest.mark.parametrize("length", ["mid-segment", "on-boundary", "one-segment", "one-full-segment"])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_cached_generation_equals_naive_recompute(name: str, length: str) -> None:
    spec = SPECS[name]
    model = build_model(spec, seed=3, dtype=torch.float64)
    prompt = random_inputs(spec, 2, prompt_lengths(spec)[length], seed=5)
    result = generate(model, prompt, NEW_TOKENS, schedule="diagonal")
    tokens, logits = naive_generate(spec, model.params, prompt, NEW_TOKENS)
    assert result.tokens.shape == (2, NEW_TOKENS) and result.logits.shape == (2, NEW_TOKENS, spec.vocab_size)
    assert torch.equal(result.tokens, tokens)
    assert (result.logits - logits).abs().max().item() < TOLERANCE
    assert len(result.decode_s) == NEW_TOKENS - 1 and 0 <= result.memory_s <= result.prefill_s


def test_the_memory_and_the_cache_matter() -> None:
    """Guard against a vacuous comparison: dropping the memory, or the cached prompt, changes the logits."""
    spec = SPECS["armt-gqa"]
    model = build_model(spec, seed=3, dtype=torch.float64)
    prompt = random_inputs(spec, 1, 3 * spec.segment_len + 2, seed=5)
    logits = generate(model, prompt, 2).logits
    without_memory = generate(model, prompt[:, 3 * spec.segment_len :], 2).logits
    assert (logits - without_memory).abs().max().item() > 1e-4
    shorter_segment = generate(model, prompt[:, 3 * spec.segment_len + 1 :], 2).logits
    assert (without_memory - shorter_segment).abs().max().item() > 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["armt-gqa", "armt-gqa-normalized", "rmt"])
def test_every_schedule_of_the_prompt_generates_the_same_bits(name: str, dtype: torch.dtype) -> None:
    spec = SPECS[name]
    model = build_model(spec, seed=3, dtype=dtype)
    prompt = random_inputs(spec, 2, 4 * spec.segment_len + 3, seed=7)
    expected = generate(model, prompt, NEW_TOKENS, schedule="sequential")
    prefix_graph = graph_for_tokens(model, 4 * spec.segment_len)
    for label, schedule in every_schedule(prefix_graph, random.Random(1)).items():
        got = generate(model, prompt, NEW_TOKENS, schedule=schedule)
        assert torch.equal(got.tokens, expected.tokens), label
        assert torch.equal(got.logits, expected.logits), label
    assert torch.equal(generate(model, prompt, NEW_TOKENS, schedule="greedy").logits, expected.logits)


@pytest.mark.parametrize("length", [3, 20])
def test_an_unknown_scheduler_is_refused_whatever_the_prompt_length(length: int) -> None:
    model = build_model(SPECS["armt-gqa"], seed=3)
    with pytest.raises(ScheduleError, match="unknown scheduler 'zigzag'"):
        generate(model, torch.zeros(1, length, dtype=torch.long), 2, schedule="zigzag")


def test_a_schedule_of_the_wrong_prompt_is_refused() -> None:
    spec = SPECS["armt-gqa"]
    model = build_model(spec, seed=3)
    prompt = random_inputs(spec, 1, 3 * spec.segment_len + 1, seed=7)
    whole_prompt = make_schedule(graph_for_tokens(model, prompt.shape[1]), "diagonal")  # 4 segments, not 3
    with pytest.raises(ScheduleError):
        generate(model, prompt, 2, schedule=whole_prompt)


def test_end_of_sequence_stops_and_pads_finished_rows() -> None:
    spec = SPECS["armt-mha"]
    model = build_model(spec, seed=3, dtype=torch.float64)
    prompt = random_inputs(spec, 2, 2 * spec.segment_len + 1, seed=5)
    free = generate(model, prompt, 8)
    eos = int(free.tokens[0, 2])
    first_hit = [int((row == eos).nonzero()[0]) if (row == eos).any() else 8 for row in free.tokens]
    stopped = generate(model, prompt, 8, eos_token_id=eos)
    steps = min(8, max(first_hit) + 1)
    assert stopped.tokens.shape == (2, steps) and len(stopped.decode_s) == steps - 1
    for row, hit in enumerate(first_hit):
        upto = min(hit + 1, steps)
        assert torch.equal(stopped.tokens[row, :upto], free.tokens[row, :upto])
        assert (stopped.tokens[row, upto:] == eos).all()
        assert torch.equal(stopped.logits[row, :upto], free.logits[row, :upto])


@pytest.mark.parametrize(
    ("prompt", "kwargs", "message"),
    [
        (torch.zeros(5, dtype=torch.long), {}, r"\[batch, tokens\] tensor with at least one token, got \[5\]"),
        (torch.zeros(1, 0, dtype=torch.long), {}, "at least one token"),
        (torch.zeros(1, 3), {}, "integer token ids"),
        (torch.tensor([[1, 50, 2]]), {}, "token id 50, outside the vocabulary 0..49"),
        (torch.tensor([[1, -1, 2]]), {}, "token id -1"),
        (torch.zeros(1, 3, dtype=torch.long), {"max_new_tokens": 0}, "max_new_tokens must be a positive integer"),
        (torch.zeros(1, 3, dtype=torch.long), {"eos_token_id": 50}, "eos_token_id must be a token id in 0..49"),
    ],
)
def test_bad_requests_are_one_clear_error(prompt: torch.Tensor, kwargs: dict, message: str) -> None:
    model = build_model(SPECS["armt-gqa"], seed=3)
    args = {"max_new_tokens": 2, **kwargs}
    with pytest.raises(GenerationError, match=message):
        generate(model, prompt, **args)


def test_a_layer_slice_cannot_generate() -> None:
    model = build_model(SPECS["armt-gqa"], seed=3).slice_layers(0, 2)
    with pytest.raises(GenerationError, match="all 3 layers"):
        generate(model, torch.zeros(1, 3, dtype=torch.long), 2)


# -- the KV cache in the one layer code ---------------------------------------------------------------


def _cached_blocks(model, hidden: torch.Tensor, rows: slice, blocks: list[int]) -> torch.Tensor:
    """``hidden`` ``[w, B, n, d]`` through ``rows`` in blocks of the given sizes, one cache for all."""
    cache = KVCache.for_model(model, hidden.shape[1], capacity=hidden.shape[2])
    outputs, start = [], 0
    for size in blocks:
        block = hidden[:, :, start : start + size]
        outputs.append(llama_layers(block, model.params, rows, model.spec, model.rope, model.matmul, cache=cache))
        start += size
    return torch.cat(outputs, dim=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_cached_step_of_width_w_equals_w_steps_of_width_1(dtype: torch.dtype) -> None:
    """Rows of one cached call get the bits of width-1 cached calls (the same code path, batch-invariant)."""
    spec = SPECS["armt-gqa"]
    model = build_model(spec, seed=3, dtype=dtype)
    hidden = torch.randn(3, 2, 11, spec.d_model, generator=torch.Generator().manual_seed(0)).to(dtype)
    wide = _cached_blocks(model, hidden, slice(0, 3), [4, 1, 6])
    for row in range(3):
        narrow = _cached_blocks(model, hidden[row : row + 1], slice(row, row + 1), [4, 1, 6])
        assert torch.equal(wide[row], narrow[0]), row


def test_cached_blocks_equal_one_uncached_call() -> None:
    """Blocks after a cache (rotary offsets, attention to the cached keys) equal one call on all tokens."""
    spec = SPECS["armt-mha"]
    model = build_model(spec, seed=3, dtype=torch.float64)
    hidden = torch.randn(2, 2, 13, spec.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    whole = llama_layers(hidden, model.params, slice(0, 2), spec, model.rope, model.matmul)
    for blocks in ([13], [1] * 13, [5, 8], [6, 1, 6]):
        cached = _cached_blocks(model, hidden, slice(0, 2), blocks)
        assert (cached - whole).abs().max().item() < 1e-12, blocks


def test_rotary_offset_tables_are_the_positions_after_the_cache() -> None:
    rope = build_model(SPECS["armt-mha"], seed=3, dtype=torch.float64).rope
    cos, sin = rope.get(40)
    for offset, count in ((1, 1), (7, 5), (33, 7)):
        got_cos, got_sin = rope.get(count, offset)
        assert got_cos.shape == (count, 1, rope.head_dim)
        assert (got_cos - cos[offset : offset + count]).abs().max() < 1e-15
        assert (got_sin - sin[offset : offset + count]).abs().max() < 1e-15


def test_cache_overflow_and_ragged_rows_are_refused() -> None:
    spec = SPECS["armt-mha"]
    model = build_model(spec, seed=3)
    cache = KVCache.for_model(model, 1, capacity=4)
    hidden = torch.randn(1, 1, 3, spec.d_model)
    llama_layers(hidden, model.params, slice(0, 1), spec, model.rope, model.matmul, cache=cache)
    with pytest.raises(ValueError, match="holds 4 tokens per layer; 6 are needed"):
        llama_layers(hidden, model.params, slice(0, 1), spec, model.rope, model.matmul, cache=cache)
    with pytest.raises(ValueError, match="different token counts"):
        llama_layers(hidden.expand(2, -1, -1, -1), model.params, slice(0, 2), spec, model.rope, model.matmul,
                     cache=cache)
