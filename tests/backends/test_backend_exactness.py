"""The exactness contract: every valid schedule gives the sequential run's bits, outputs and memory alike."""

from __future__ import annotations

import random

import pytest
from backend_helpers import (
    DTYPES,
    FAST,
    assert_bitwise_equal,
    build_model,
    every_schedule,
    execute,
    graph_for,
    random_inputs,
    sequence_lengths,
    tiny_specs,
)
from hypothesis import given
from hypothesis import strategies as st


def _check_every_schedule(data: st.DataObject, family: str, matmul: str) -> None:
    spec = data.draw(tiny_specs(family), label="spec")
    num_tokens = data.draw(sequence_lengths(spec.segment_len), label="num_tokens")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    batch = data.draw(st.integers(1, 2), label="batch")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    model = build_model(spec, seed=seed, dtype=dtype, matmul=matmul)
    inputs = random_inputs(spec, batch, num_tokens, seed)
    graph = graph_for(model, num_tokens)
    schedules = every_schedule(graph, random.Random(seed))
    reference = execute(model, inputs, schedules.pop("sequential"))
    for name, schedule in schedules.items():
        assert_bitwise_equal(reference, execute(model, inputs, schedule), f"{family}/{name}/{dtype}")


@pytest.mark.slow
@FAST
@given(data=st.data())
def test_every_schedule_is_bit_exact_armt(data: st.DataObject) -> None:
    _check_every_schedule(data, "armt", "auto")


@pytest.mark.slow
@FAST
@given(data=st.data())
def test_every_schedule_is_bit_exact_armt_per_row_gemms(data: st.DataObject) -> None:
    _check_every_schedule(data, "armt", "rows")


@FAST
@given(data=st.data())
def test_every_schedule_is_bit_exact_rmt(data: st.DataObject) -> None:
    _check_every_schedule(data, "rmt", "auto")
