"""The full-attention baseline equals ``transformers.LlamaModel`` on the whole input, whatever the chunking.

The HF model is saved and loaded through our checkpoint loader, as a user would. In fp64 HF computes its
RMSNorm and RoPE tables in fp32, so those two are patched to full precision (as in the HF parity test);
then the baseline matches to 1e-10 on O(1) outputs. Chunking changes kernel shapes only: chunked and
one-chunk runs agree to fp64 rounding.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from checkpoint_fixtures import full_precision_hf, llama_config, tiny_llama

from rmtsched.backends.torch import build_model
from rmtsched.backends.torch.checkpoint import load_model
from rmtsched.backends.torch.full_attention import DEFAULT_CHUNK_TOKENS, FullAttentionError, full_attention_forward
from rmtsched.specs.model import ModelSpec

__all__ = ["full_precision_hf"]  # a fixture the tests below request by name

NUM_TOKENS = 29
SPEC = ModelSpec(name="fa", family="armt", num_layers=3, d_model=24, num_heads=4, num_kv_heads=2, mlp_dim=40,
                 vocab_size=50, segment_len=7, mem_tokens=3, mem_key_dim=5)


def run_chunks(model, inputs: torch.Tensor, chunk_tokens: int | None) -> tuple[torch.Tensor, list[int]]:
    """The baseline's outputs concatenated over chunks, and each chunk's token count (in delivery order)."""
    chunks: list[tuple[int, torch.Tensor]] = []
    stats = full_attention_forward(model, inputs, chunk_tokens=chunk_tokens,
                                   on_output=lambda index, hidden: chunks.append((index, hidden)))
    assert [index for index, _ in chunks] == list(range(stats.chunks))
    assert stats.tokens == inputs.shape[1] and stats.wall_s > 0
    return torch.cat([hidden for _, hidden in chunks], dim=1), [hidden.shape[1] for _, hidden in chunks]


@pytest.fixture
def hf_llama_dir(tmp_path: Path):
    model = tiny_llama(llama_config("sdpa"), torch.float64, causal_lm=False)
    model.save_pretrained(tmp_path, safe_serialization=True)
    return model, tmp_path


@pytest.mark.usefixtures("full_precision_hf")
@pytest.mark.parametrize("chunk_tokens", [1, 5, NUM_TOKENS, None])
def test_equals_hf_llama_on_the_whole_input(hf_llama_dir, chunk_tokens: int | None) -> None:
    hf_model, directory = hf_llama_dir
    # The memory settings do not matter: the baseline never touches the memory (seeded here). A bare
    # LlamaModel save has no lm_head: the head is tied so the spec is complete (the baseline never uses it).
    overrides = {"segment_len": 8, "mem_tokens": 4, "mem_key_dim": 8, "tie_word_embeddings": True}
    model = load_model(directory, spec_overrides=overrides, init_memory="seed", dtype=torch.float64)
    ids = torch.randint(0, 100, (2, NUM_TOKENS), generator=torch.Generator().manual_seed(1))
    ours, sizes = run_chunks(model, ids, chunk_tokens)
    with torch.no_grad():
        theirs = hf_model(input_ids=ids).last_hidden_state
    assert ours.shape == theirs.shape == (2, NUM_TOKENS, 32)
    assert (ours - theirs).abs().max().item() < 1e-10
    chunk = chunk_tokens or DEFAULT_CHUNK_TOKENS
    assert sizes == [min(chunk, NUM_TOKENS - start) for start in range(0, NUM_TOKENS, chunk)]


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_chunked_equals_one_chunk_to_rounding(dtype: torch.dtype, tolerance: float) -> None:
    model = build_model(SPEC, seed=2, dtype=dtype)
    ids = torch.randint(0, SPEC.vocab_size, (2, NUM_TOKENS), generator=torch.Generator().manual_seed(3))
    whole, _ = run_chunks(model, ids, NUM_TOKENS)
    for chunk_tokens in (1, 4, 7, 16):
        chunked, _ = run_chunks(model, ids, chunk_tokens)
        assert (chunked - whole).abs().max().item() < tolerance, chunk_tokens
    # Not vacuous: the later tokens do see the earlier ones (the cache is read).
    alone, _ = run_chunks(model, ids[:, 7:], 4)
    assert (alone[:, :4] - whole[:, 7:11]).abs().max().item() > 1e-3


def test_embeddings_input_equals_token_ids() -> None:
    model = build_model(SPEC, seed=2, dtype=torch.float64)
    ids = torch.randint(0, SPEC.vocab_size, (1, 12), generator=torch.Generator().manual_seed(3))
    from_ids, _ = run_chunks(model, ids, 5)
    from_embeddings, _ = run_chunks(model, model.params["embed"][ids], 5)
    assert torch.equal(from_ids, from_embeddings)


@pytest.mark.parametrize(
    ("inputs", "chunk_tokens", "message"),
    [
        (torch.zeros(1, 4, dtype=torch.long), 0, "chunk_tokens must be a positive integer, got 0"),
        (torch.zeros(1, 4, dtype=torch.long), 2.5, "chunk_tokens must be a positive integer, got 2.5"),
        (torch.zeros(4, dtype=torch.long), 2, "got shape [4]"),
        (torch.zeros(1, 0, dtype=torch.long), 2, "at least one token"),
    ],
)
def test_bad_input_is_one_clear_error(inputs: torch.Tensor, chunk_tokens, message: str) -> None:
    model = build_model(SPEC, seed=2)
    with pytest.raises(FullAttentionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        full_attention_forward(model, inputs, chunk_tokens=chunk_tokens)


def test_a_layer_slice_is_refused() -> None:
    with pytest.raises(FullAttentionError, match="needs all 3 layers"):
        full_attention_forward(build_model(SPEC, seed=2).slice_layers(0, 2), torch.zeros(1, 4, dtype=torch.long))
