"""Outputs do not depend on the intra-op thread count: a 2-thread run equals a 1-thread run, bit for bit.

Multi-process pipelines run each rank with fewer threads than a single process would, so this is what
lets a P-process run match the one-process sequential run. MKL splits some small GEMMs (and fp64 SDPA)
over threads with another summation order; ``RowMatmul`` probes each row layout at the current thread
count against one thread and runs the layouts that differ with one thread.
"""

from __future__ import annotations

import pytest
import torch
from backend_helpers import (
    FAST,
    assert_bitwise_equal,
    build_model,
    execute,
    random_inputs,
    sequence_lengths,
    tiny_specs,
)
from hypothesis import given
from hypothesis import strategies as st

from rmtsched.backends.torch.rowmm import RowMatmul
from rmtsched.backends.torch.threads import intra_op_threads
from rmtsched.sched import graph_for_tokens, make_schedule


@FAST
@given(data=st.data())
def test_diagonal_at_two_threads_equals_sequential_at_one(data: st.DataObject) -> None:
    family = data.draw(st.sampled_from(("armt", "rmt")), label="family")
    spec = data.draw(tiny_specs(family), label="spec")
    num_tokens = data.draw(sequence_lengths(spec.segment_len), label="num_tokens")
    dtype = data.draw(st.sampled_from((torch.float32, torch.float64)), label="dtype")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    model = build_model(spec, seed=seed, dtype=dtype)
    inputs = random_inputs(spec, 1, num_tokens, seed)
    graph = graph_for_tokens(model, num_tokens)
    with intra_op_threads(1):
        reference = execute(model, inputs, make_schedule(graph, "sequential"))
    with intra_op_threads(2):
        for name in ("sequential", "diagonal"):
            assert_bitwise_equal(reference, execute(model, inputs, make_schedule(graph, name)),
                                 f"{family}/{name}/{dtype} at 2 threads vs sequential at 1")


# Row layouts whose raw MKL call gave other bits at 2 threads than at 1 on the development machine.
THREAD_SENSITIVE = [
    ("linear", (1, 6, 32), (1, 48, 32), torch.float32),
    ("linear", (1, 10, 16), (1, 64, 16), torch.float32),
    ("linear", (1, 15, 64), (1, 32, 64), torch.float64),
    ("batched", (1, 1, 10, 48), (1, 1, 48, 17), torch.float32),
]


@pytest.mark.parametrize(("kind", "a_shape", "b_shape", "dtype"), THREAD_SENSITIVE)
@pytest.mark.parametrize("mode", ["auto", "rows"])
def test_a_row_gets_the_one_thread_bits_at_any_thread_count(kind, a_shape, b_shape, dtype, mode) -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(8):
        a = torch.randn(a_shape, generator=generator, dtype=dtype)
        b = torch.randn(b_shape, generator=generator, dtype=dtype)
        results = []
        for count in (1, 2):
            with intra_op_threads(count):
                matmul = RowMatmul(mode)
                results.append(matmul.linear(a, b) if kind == "linear" else matmul.batched(a, b))
        assert torch.equal(*results), f"{kind} {a_shape} x {b_shape} {dtype} differs between 1 and 2 threads"


def test_the_thread_count_is_restored_after_a_one_thread_call() -> None:
    a, b = torch.randn(1, 6, 32), torch.randn(1, 48, 32)
    with intra_op_threads(2):
        RowMatmul("auto").linear(a, b)
        assert torch.get_num_threads() == 2
