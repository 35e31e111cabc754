"""The executor's sequential run equals a naive, obviously-correct loop written from the maths (naive_reference.py).

The naive model is plain per-layer, per-segment PyTorch in the shape of the ARMT reference code and Hugging
Face LLaMA (``F.linear``, ``F.silu``, ``torch.sigmoid``, ``F.normalize``, an explicit masked softmax, a
``first_seg`` flag that skips the first read): no scheduler, no stacking, no batching over layers. Its
kernels round differently from ours, so we compare in fp64 with a tolerance of 1e-10 (absolute, on O(1)
activations).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from backend_helpers import build_model, execute, graph_for, random_inputs
from naive_reference import SPECS, TOLERANCE, naive_armt, naive_rmt

from rmtsched.sched import make_schedule


@pytest.mark.parametrize("name", sorted(SPECS))
def test_sequential_run_equals_naive_reference(name: str) -> None:
    spec = SPECS[name]
    model = build_model(spec, seed=3, dtype=torch.float64)
    num_tokens = 4 * spec.segment_len + 2
    inputs = random_inputs(spec, 2, num_tokens, seed=5)
    result = execute(model, inputs, make_schedule(graph_for(model, num_tokens), "sequential"))
    if spec.family == "armt":
        expected, big_a, z = naive_armt(spec, model.params, inputs)
        assoc = result.final_state["assoc"]
        for layer in range(spec.num_layers):
            assert (assoc[layer, ..., : spec.d_model] - big_a[layer]).abs().max() < TOLERANCE
            assert (assoc[layer, ..., spec.d_model] - z[layer]).abs().max() < TOLERANCE
    else:
        expected = naive_rmt(spec, model.params, inputs)
    assert len(result.outputs) == len(expected) == 5
    head = model.params["embed"] if spec.tie_word_embeddings else model.params["lm_head"]
    for got, want in zip(result.outputs, expected, strict=True):
        assert got.shape == want.shape
        assert (got - want).abs().max() < TOLERANCE
        assert (model.logits(got) - F.linear(want, head)).abs().max() < TOLERANCE


@pytest.mark.parametrize(("name", "z_floor"), [("armt-gqa", 1e-2), ("armt-gqa-normalized", 0.5)])
def test_memory_state_is_nontrivial_in_reference_comparison(name: str, z_floor: float) -> None:
    """Guard against a vacuous comparison: the memory the reference checks is actually written and read.

    Un-normalised ("paper") features are products of two small keys, so z is smaller than with unit phi.
    """
    spec = SPECS[name]
    model = build_model(spec, seed=3, dtype=torch.float64)
    inputs = random_inputs(spec, 1, 3 * spec.segment_len, seed=5)
    _, big_a, z = naive_armt(spec, model.params, inputs)
    assert all(a.abs().max() > 1e-3 for a in big_a)
    assert all(zz.min() >= 0 and zz.max() > z_floor for zz in z)
