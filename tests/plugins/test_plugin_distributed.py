"""Plug-ins run on the multi-process executor too, bit for bit equal to one process (same thread count)."""

from __future__ import annotations

import functools

import pytest
import torch
from plugin_helpers import load_example, random_inputs, run

from rmtsched.backends.distributed import run_pipelined
from rmtsched.backends.torch.threads import intra_op_threads
from rmtsched.sched import graph_for_tokens, make_schedule


def factories():
    xl = load_example("transformer_xl_cache")
    glr = load_example("gated_linear_recurrence")
    return {
        "transformer_xl_cache": functools.partial(
            xl.TransformerXLCache, xl.XLConfig(num_layers=4, segment_len=4), seed=1
        ),
        "gated_linear_recurrence": functools.partial(
            glr.GatedLinearRecurrence, glr.GLRConfig(num_layers=4, segment_len=8, chunk_len=3), seed=2
        ),
    }


@pytest.mark.distributed
@pytest.mark.parametrize("name", ["transformer_xl_cache", "gated_linear_recurrence"])
def test_pipelined_over_two_processes_is_bit_exact(name):
    factory = factories()[name]
    model = factory()
    inputs = random_inputs(6 * model.segment_len + 3, 101, 2, seed=4)
    result = run_pipelined(factory, inputs, num_procs=2, threads_per_proc=1, keep_outputs=True, timeout_s=60.0)
    with intra_op_threads(1):  # the workers' thread count (GEMMs outside RowMatmul depend on it)
        outputs, state = run(model, inputs, make_schedule(graph_for_tokens(model, inputs.shape[1]), "sequential"))
    assert len(result.outputs) == len(outputs)
    for segment, (got, want) in enumerate(zip(result.outputs, outputs, strict=True)):
        assert torch.equal(got, want), f"segment {segment}"
    for key, value in state.items():
        assert torch.equal(result.final_state[key], value), key
