"""Rotary frequencies: llama3 scaling equals transformers' in fp32 bit for bit, and an fp64 transcription of the
published rule to round-off; the spec refuses rope settings it cannot run, naming the field."""

from __future__ import annotations

import pytest
import torch
from backend_helpers import llama3_inv_freq_fp64

from rmtsched.backends.torch.kernels import rotary_inv_freq
from rmtsched.errors import SpecError
from rmtsched.specs.model import ModelSpec, RopeScaling, load_model_spec

transformers = pytest.importorskip("transformers")
rope_utils = pytest.importorskip("transformers.modeling_rope_utils")

# (head_dim, theta, factor, low, high, original): Llama 3.2-1B/3B, Llama 3.1-8B, and the tiny test setting.
SETTINGS = [(64, 500000.0, 32.0, 1.0, 4.0, 8192), (128, 500000.0, 8.0, 1.0, 4.0, 8192),
            (8, 10000.0, 8.0, 1.0, 8.0, 1024)]


def hf_rope(head_dim: int, theta: float, factor: float, low: float, high: float, original: int) -> dict:
    return {"rope_type": "llama3", "rope_theta": theta, "factor": factor, "low_freq_factor": low,
            "high_freq_factor": high, "original_max_position_embeddings": original}


@pytest.mark.parametrize("setting", SETTINGS)
def test_llama3_frequencies_equal_transformers_bit_for_bit_in_fp32(setting: tuple) -> None:
    head_dim, theta, factor, low, high, original = setting
    config = transformers.LlamaConfig(hidden_size=2 * head_dim, num_attention_heads=2,
                                      max_position_embeddings=4 * original,
                                      rope_parameters=hf_rope(*setting))
    theirs, _ = rope_utils.ROPE_INIT_FUNCTIONS["llama3"](config)
    ours = rotary_inv_freq(head_dim, theta, torch.float32, RopeScaling(factor, low, high, original))
    assert ours.dtype == theirs.dtype == torch.float32 and torch.equal(ours, theirs)
    plain = rotary_inv_freq(head_dim, theta, torch.float32)
    assert not torch.equal(ours, plain) and torch.equal(ours[0], plain[0])  # low frequencies move, the first stays


@pytest.mark.parametrize("setting", SETTINGS)
def test_llama3_frequencies_equal_the_published_rule_in_fp64(setting: tuple) -> None:
    head_dim, theta, factor, low, high, original = setting
    ours = rotary_inv_freq(head_dim, theta, torch.float64, RopeScaling(factor, low, high, original))
    want = llama3_inv_freq_fp64(hf_rope(*setting), head_dim)
    assert ((ours - want).abs() / want).max() < 1e-14


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rope_type": "yarn"}, "rope_type 'yarn' is not one of ['default', 'llama3']"),
        ({"rope_factor": 0.0}, "rope_factor must be a positive, finite number, got 0.0"),
        ({"rope_theta": -1.0}, "rope_theta must be a positive, finite number, got -1.0"),
        ({"rope_low_freq_factor": 4.0}, "rope_high_freq_factor 4.0 must exceed rope_low_freq_factor 4.0"),
        ({"rope_original_max_position": 0}, "rope_original_max_position must be a positive integer (at most"),
    ],
)
def test_rope_settings_the_backend_cannot_run_are_refused(change: dict, message: str) -> None:
    with pytest.raises(SpecError) as info:
        load_model_spec("armt-tiny").replace(**change)
    assert message in str(info.value)


def test_rope_scaling_is_none_for_plain_rotary_tables() -> None:
    spec = load_model_spec("armt-tiny")
    assert spec.rope_scaling is None
    scaled = spec.replace(rope_type="llama3", rope_factor=32.0)
    assert scaled.rope_scaling == RopeScaling(32.0, 1.0, 4.0, 8192)
    assert ModelSpec.from_dict(scaled.to_dict()) == scaled
