"""The built-in ARMT and RMT across processes: bit-exact with the single-process executor's sequential run.

Bits depend on the intra-op thread count: MKL splits the reduction of small-row GEMMs (ARMT's memory
write multiplies only batch x M rows) over threads, so 1 and 2 threads round differently. The reference
therefore runs with the ranks' thread count; ranks never change their count mid-run.
"""

from __future__ import annotations

import functools

import pytest
import torch

from rmtsched.backends.distributed import outputs_sha256, run_pipelined
from rmtsched.backends.torch import build_model, execute
from rmtsched.backends.torch.threads import intra_op_threads
from rmtsched.sched import graph_for_tokens, make_schedule
from rmtsched.specs.model import ModelSpec

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(120)]


def tiny_spec(family: str) -> ModelSpec:
    return ModelSpec(
        name=f"{family}-dist-test", family=family, num_layers=4, d_model=32, num_heads=4, num_kv_heads=2,
        mlp_dim=64, vocab_size=97, segment_len=7, mem_tokens=3, mem_key_dim=8,
    )  # fmt: skip


def sequential_reference(spec, factory, inputs, threads):
    with intra_op_threads(threads):
        graph = graph_for_tokens(spec, inputs.shape[1])
        return execute(factory(device="cpu"), inputs, make_schedule(graph, "sequential"))


@pytest.mark.parametrize(
    ("family", "dtype", "num_procs", "threads"),
    [
        ("armt", torch.float32, 2, 1),
        ("armt", torch.float64, 4, 1),
        ("rmt", torch.float32, 4, 1),
        ("rmt", torch.float64, 2, 1),
        ("armt", torch.float32, 2, 2),
    ],
)
def test_built_in_models_across_processes_are_bit_exact(family, dtype, num_procs, threads):
    spec = tiny_spec(family)
    factory = functools.partial(build_model, spec, seed=3, dtype=dtype)
    inputs = torch.randint(97, (2, 40), generator=torch.Generator().manual_seed(1))  # 6 segments, last of 5
    expected = sequential_reference(spec, factory, inputs, threads)
    result = run_pipelined(
        factory, inputs, num_procs=num_procs, layout=spec, threads_per_proc=threads, keep_outputs=True, timeout_s=30
    )
    for segment, (got, want) in enumerate(zip(result.outputs, expected.outputs, strict=True)):
        assert torch.equal(got, want), f"segment {segment} differs by {(got - want).abs().max().item()}"
    assert result.final_state.keys() == expected.final_state.keys()
    for name, value in expected.final_state.items():
        assert torch.equal(result.final_state[name], value), name
    assert result.output_sha256 == outputs_sha256(expected.outputs)
    assert not any(rank.holds_all_layers for rank in result.ranks)  # build_model(layers=...) built each stage only
