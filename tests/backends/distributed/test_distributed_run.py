"""Multi-process runs (gloo on 127.0.0.1) against the single-process reference loop, bit for bit.

Workers run with one intra-op thread, the reference with two, so these tests also check that the thread
count does not change the bits of the kernels involved.
"""

from __future__ import annotations

import functools

import pytest
import torch
from dist_toy_model import build_toy, reference_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmtsched.api import pipeline_record
from rmtsched.backends.distributed import build_plans, outputs_sha256, run_pipelined
from rmtsched.backends.torch.threads import intra_op_threads
from rmtsched.sched import Schedule, Step, Transfer, build_cell_graph, split_segments
from rmtsched.sched.schedulers.diagonal import waves

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(120)]


def toy_factory(num_layers=4, d_model=12, segment_len=5, mem_tokens=2, global_memory=False, dtype=torch.float32,
                **extra):  # fmt: skip
    return functools.partial(
        build_toy, num_layers=num_layers, d_model=d_model, segment_len=segment_len, mem_tokens=mem_tokens,
        vocab_size=37, global_memory=global_memory, seed=11, dtype=dtype, **extra,
    )  # fmt: skip


def reference(factory, inputs, threads=2):
    with intra_op_threads(threads):
        return reference_run(factory(device=torch.device("cpu")), inputs)


def token_ids(batch, num_tokens, seed=0):
    return torch.randint(37, (batch, num_tokens), generator=torch.Generator().manual_seed(seed))


def assert_bit_exact(result, expected_outputs, expected_state):
    assert len(result.outputs) == len(expected_outputs)
    for segment, (got, want) in enumerate(zip(result.outputs, expected_outputs, strict=True)):
        assert torch.equal(got, want), f"segment {segment} differs by {(got - want).abs().max().item()}"
    assert torch.equal(result.final_state["h"], expected_state["h"])
    assert result.output_sha256 == outputs_sha256(expected_outputs)


@pytest.mark.parametrize(
    ("num_procs", "dtype", "global_memory"),
    [(2, torch.float32, False), (4, torch.float64, False), (2, torch.float64, True), (4, torch.float32, True)],
)
def test_pipelined_processes_are_bit_exact_with_one_process(num_procs, dtype, global_memory):
    factory = toy_factory(num_layers=5, dtype=dtype, global_memory=global_memory)
    inputs = token_ids(2, 33)  # 7 segments, the last of 3 tokens
    expected = reference(factory, inputs)
    result = run_pipelined(factory, inputs, num_procs=num_procs, keep_outputs=True, timeout_s=20)
    assert_bit_exact(result, *expected)
    stages = [rank.layers for rank in result.ranks]
    assert stages[0][0] == 0 and stages[-1][1] == 5 and len(stages) == num_procs
    assert not any(rank.holds_all_layers for rank in result.ranks)
    assert all(rank.busy_s > 0 for rank in result.ranks)


def test_one_process_equals_the_single_process_path():
    factory = toy_factory(dtype=torch.float64)
    inputs = token_ids(1, 12)
    result = run_pipelined(factory, inputs, num_procs=1, keep_outputs=True, timeout_s=20, repeat=2)
    assert_bit_exact(result, *reference(factory, inputs))
    assert result.scheduler == "pipelined" and len(result.wall_s_runs) == 2 and result.bubble_fraction < 0.5


def test_ranks_without_a_slice_hook_keep_every_layer_and_stay_exact():
    factory = toy_factory(global_memory=True, with_slice=False)
    inputs = token_ids(1, 17)
    result = run_pipelined(factory, inputs, num_procs=2, keep_outputs=True, timeout_s=20)
    assert_bit_exact(result, *reference(factory, inputs))
    assert all(rank.holds_all_layers for rank in result.ranks)


def test_embeddings_as_inputs_and_two_threads_per_rank():
    factory = toy_factory(dtype=torch.float64)
    inputs = torch.randn(1, 14, 12, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    result = run_pipelined(factory, inputs, num_procs=2, threads_per_proc=2, keep_outputs=True, timeout_s=20)
    assert_bit_exact(result, *reference(factory, inputs, threads=1))


def stage_waves_schedule(num_layers, segment_tokens, stages):
    """A hand-made multi-device schedule: each diagonal wave split by stage, so steps are wider than one cell."""
    graph = build_cell_graph(num_layers, segment_tokens=segment_tokens)
    device_of = {layer: d for d, stage in enumerate(stages) for layer in stage}
    steps = []
    for wave in waves(graph):
        for device in range(len(stages)):
            cells = tuple(cell for cell in wave if device_of[cell.layer] == device)
            if cells:
                steps.append(Step(cells, device))
    transfers = tuple(
        {
            (src, device_of[src.layer], device_of[dst.layer]): None
            for src, dst in graph.edges()
            if device_of[src.layer] != device_of[dst.layer]
        }
    )
    return Schedule(tuple(steps), tuple(Transfer(*t) for t in transfers), "stage-waves", len(stages)), graph


def test_any_valid_multi_device_schedule_with_wide_steps_is_exact():
    factory = toy_factory(num_layers=5, dtype=torch.float32)
    inputs = token_ids(2, 28)
    schedule, graph = stage_waves_schedule(5, split_segments(28, 5), [range(0, 3), range(3, 5)])
    assert schedule.max_width == 3
    build_plans(schedule, graph, 2, uses_previous_output=False)  # valid, and a one-stage-per-rank split
    result = run_pipelined(factory, inputs, num_procs=2, schedule=schedule, keep_outputs=True, timeout_s=20)
    assert_bit_exact(result, *reference(factory, inputs))
    assert result.scheduler == "stage-waves"


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    num_layers=st.integers(1, 5),
    procs=st.integers(1, 4),
    segment_len=st.integers(1, 6),
    mem_tokens=st.integers(0, 3),
    num_segments=st.integers(1, 6),
    short=st.integers(0, 5),
    global_memory=st.booleans(),
    double=st.booleans(),
)
def test_random_small_configs_are_bit_exact(
    num_layers, procs, segment_len, mem_tokens, num_segments, short, global_memory, double
):
    procs = min(procs, num_layers)
    num_tokens = max(1, (num_segments - 1) * segment_len + min(short, segment_len - 1) + 1)
    factory = toy_factory(
        num_layers=num_layers, d_model=8, segment_len=segment_len, mem_tokens=mem_tokens,
        global_memory=global_memory, dtype=torch.float64 if double else torch.float32,
    )  # fmt: skip
    inputs = token_ids(1, num_tokens, seed=num_tokens)
    result = run_pipelined(factory, inputs, num_procs=procs, keep_outputs=True, timeout_s=20)
    assert_bit_exact(result, *reference(factory, inputs))


def test_the_cli_record_has_per_rank_busy_time():
    factory = toy_factory()
    result = run_pipelined(factory, token_ids(1, 20), num_procs=2, timeout_s=20)
    data = pipeline_record(result)
    assert data["devices"] == 2 and data["segments"] == 4 and len(data["output_sha256"]) == 64
    assert data["steps"] == 4 * 4 and data["repeat"] == 1 and data["peak_memory_kind"] == "process_peak_rss"
    assert [rank["layers"] for rank in data["ranks"]] == [[0, 2], [2, 4]]
    assert all(rank["busy_s"] > 0 and rank["wall_s"] >= rank["busy_s"] for rank in data["ranks"])
    assert 0 <= data["bubble_fraction"] < 1 and data["ideal_bubble_fraction"] == pytest.approx(1 / 5)
    assert result.outputs is None and result.final_state is None
