"""Shared pieces of the backend tests: random tiny model specs, random valid schedules, bitwise comparison.

Specs span the exactness contract's space: layers 1..6, heads 1..4 with kv heads dividing them, d_model
8..64 with an even head_dim, T 1..17, M 0..4, 1..9 segments with a short last one; both ARMT maths variants,
tied or untied LM head, plain or llama3-scaled rotary tables.
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from random_dags import random_valid_schedule

from rmtsched.backends.torch import build_model, execute
from rmtsched.sched import CellGraph, Schedule, graph_for_tokens, make_schedule
from rmtsched.specs.model import ModelSpec

FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = (torch.float32, torch.float64)


@st.composite
def tiny_specs(draw: st.DrawFn, family: str) -> ModelSpec:
    kv_heads = draw(st.integers(1, 4))
    heads = kv_heads * draw(st.integers(1, 4 // kv_heads))
    half_head = draw(st.integers(max(1, -(-4 // heads)), 32 // heads))
    variant = draw(st.sampled_from(("paper", "normalized"))) if family == "armt" else "paper"
    rope = draw(st.sampled_from(("default", "llama3")))
    return ModelSpec(
        name="hyp",
        family=family,
        armt_variant=variant,
        tie_word_embeddings=draw(st.booleans()),
        rope_type=rope,
        rope_original_max_position=draw(st.integers(8, 64)),
        num_layers=draw(st.integers(1, 6)),
        d_model=heads * 2 * half_head,
        num_heads=heads,
        num_kv_heads=kv_heads,
        mlp_dim=draw(st.integers(4, 96)),
        vocab_size=37,
        segment_len=draw(st.integers(1, 17)),
        mem_tokens=draw(st.integers(0, 4)),
        mem_key_dim=draw(st.integers(1, 8)),
        dtype_bytes=4,
    )


def llama3_inv_freq_fp64(rope: dict[str, Any], dim: int) -> torch.Tensor:
    """Rotary frequencies in fp64, written per frequency from Llama 3.1's published rule (``rope`` holds HF's
    rope_parameters keys): keep high frequencies, divide low ones by ``factor``, interpolate linearly in
    ``original / wavelength`` between them. With ``rope_type`` default, the plain ``theta^(-2i/dim)``."""
    inv_freq = 1.0 / rope["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    if rope.get("rope_type", "default") == "default":
        return inv_freq
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    original = rope["original_max_position_embeddings"]
    out = []
    for freq in inv_freq.tolist():
        wavelength = 2 * math.pi / freq
        if wavelength < original / high:
            out.append(freq)
        elif wavelength > original / low:
            out.append(freq / factor)
        else:
            smooth = (original / wavelength - low) / (high - low)
            out.append((1 - smooth) * freq / factor + smooth * freq)
    return torch.tensor(out, dtype=torch.float64)


def spec_rope(spec: ModelSpec) -> dict[str, Any]:
    """``spec``'s rotary settings as HF's rope_parameters keys (for ``llama3_inv_freq_fp64``)."""
    return {"rope_type": spec.rope_type, "rope_theta": spec.rope_theta, "factor": spec.rope_factor,
            "low_freq_factor": spec.rope_low_freq_factor, "high_freq_factor": spec.rope_high_freq_factor,
            "original_max_position_embeddings": spec.rope_original_max_position}


@st.composite
def sequence_lengths(draw: st.DrawFn, segment_len: int) -> int:
    """1..9 segments; the last one is short whenever the draw allows it."""
    segments = draw(st.integers(1, 9))
    return segment_len * (segments - 1) + draw(st.integers(1, segment_len))


def every_schedule(graph: CellGraph, rng: random.Random) -> dict[str, Schedule]:
    """Every registered scheduler (with width caps and device counts) plus two random valid schedules."""
    big_l = graph.num_layers
    schedules = {
        "sequential": make_schedule(graph, "sequential"),
        "diagonal": make_schedule(graph, "diagonal"),
        "greedy": make_schedule(graph, "greedy"),
    }
    width = rng.randint(1, big_l)
    schedules[f"diagonal/w{width}"] = make_schedule(graph, "diagonal", max_width=width)
    schedules[f"greedy/w{width}"] = make_schedule(graph, "greedy", max_width=width)
    devices = rng.randint(1, big_l)
    schedules[f"pipelined/P{devices}"] = make_schedule(graph, "pipelined", num_devices=devices)
    for index in range(2):
        schedules[f"random{index}"] = random_valid_schedule(graph, rng)
    return schedules


def graph_for(model, num_tokens: int) -> CellGraph:
    return graph_for_tokens(model, num_tokens)


def random_inputs(spec: ModelSpec, batch: int, num_tokens: int, seed: int, embeddings: bool = False) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if embeddings:
        return torch.randn(batch, num_tokens, spec.d_model, generator=generator)
    return torch.randint(0, spec.vocab_size, (batch, num_tokens), generator=generator)


def assert_bitwise_equal(expected, got, label: str) -> None:
    """Outputs, final state and last hidden state of two ``ExecutionResult``s are identical bits."""
    assert len(expected.outputs) == len(got.outputs), label
    for segment, (a, b) in enumerate(zip(expected.outputs, got.outputs, strict=True)):
        assert torch.equal(a, b), f"{label}: segment {segment} output differs by {(a - b).abs().max().item():.3e}"
    assert expected.final_state.keys() == got.final_state.keys(), label
    for name, value in expected.final_state.items():
        assert torch.equal(value, got.final_state[name]), f"{label}: final state {name!r} differs"
    assert torch.equal(expected.last_hidden, got.last_hidden), f"{label}: last hidden state differs"


__all__ = [
    "DTYPES",
    "FAST",
    "assert_bitwise_equal",
    "build_model",
    "every_schedule",
    "execute",
    "graph_for",
    "llama3_inv_freq_fp64",
    "random_inputs",
    "random_valid_schedule",
    "sequence_lengths",
    "spec_rope",
    "tiny_specs",
]
