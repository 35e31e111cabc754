"""Faults: a rank that raises, dies or hangs ends every rank within the timeout, with an error naming the
rank and the step, no result and no process left behind; bad configurations fail before any process starts."""

from __future__ import annotations

import functools
import multiprocessing.forkserver
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from dist_toy_model import build_toy

from rmtsched.backends.distributed import DistributedConfigError, DistributedError, run_pipelined
from rmtsched.errors import RmtschedError, RunFailure
from rmtsched.sched import build_cell_graph, make_schedule, split_segments

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(90)]

NUM_LAYERS, SEGMENT_LEN, NUM_TOKENS = 5, 4, 24  # 6 segments; two ranks: layers [0, 3) and [3, 5)


def factory(fault=None, num_layers=NUM_LAYERS):
    return functools.partial(
        build_toy, num_layers=num_layers, d_model=8, segment_len=SEGMENT_LEN, mem_tokens=1, vocab_size=17,
        global_memory=False, seed=0, dtype=torch.float32, fault=fault,
    )  # fmt: skip


def inputs():
    return torch.randint(17, (1, NUM_TOKENS), generator=torch.Generator().manual_seed(0))


def step_of(layer, segment, num_procs=2):
    graph = build_cell_graph(NUM_LAYERS, segment_tokens=split_segments(NUM_TOKENS, SEGMENT_LEN))
    schedule = make_schedule(graph, "pipelined", num_devices=num_procs)
    return next(i for i, step in enumerate(schedule.steps) if (layer, segment) in step.cells)


def forkserver_children() -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is the launcher's forkserver: the ranks, zombies included."""
    server = multiprocessing.forkserver._forkserver._forkserver_pid
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == server:
            found.append((int(stat.parent.name), fields[0]))
    return found


def run_and_fail(fault, timeout_s=20.0):
    start = time.monotonic()
    with pytest.raises(DistributedError) as info:
        run_pipelined(factory(fault), inputs(), num_procs=2, timeout_s=timeout_s, keep_outputs=True, warmup=False)
    elapsed = time.monotonic() - start
    assert forkserver_children() == [], "a rank outlived the failed run"
    return info.value, elapsed


def test_a_rank_that_raises_mid_run_ends_every_rank_with_its_step():
    error, elapsed = run_and_fail(("raise", 3, 2))
    step = step_of(3, 2)
    assert (error.kind, error.rank, error.step) == ("raised", 1, step)
    assert f"rank 1 failed at step {step}" in str(error) and "injected failure at cell (3, 2)" in str(error)
    assert "RuntimeError" in error.remote_traceback
    assert f"[{step}]" in "\n".join(error.__notes__)  # the schedule grid with the failing step's cells marked
    assert elapsed < 20  # the timeout given to run_and_fail


def test_a_rank_that_dies_ends_every_rank_and_is_named():
    error, elapsed = run_and_fail(("exit", 1, 3))
    assert (error.kind, error.rank, error.step) == ("died", 0, step_of(1, 3))
    assert "rank 0 exited (3) without a result" in str(error)
    assert elapsed < 20


def test_a_rank_that_never_answers_is_blamed_after_the_timeout():
    error, elapsed = run_and_fail(("hang", 4, 1), timeout_s=2.0)
    assert (error.kind, error.rank, error.step) == ("stalled", 1, step_of(4, 1))
    assert "no rank made progress for 2 s: rank 1 stopped answering" in str(error)
    assert isinstance(error, RunFailure) and not isinstance(error, RmtschedError)  # exit 3, not "bad input"
    assert 2.0 <= elapsed < 12  # timeout plus process start and teardown


def test_a_stall_is_blamed_on_the_stopped_rank_not_on_one_waiting_at_a_barrier():
    """Rank 1 stops in its very last cell; rank 0 has sent everything and waits in ``dist.barrier()``,
    which used to look like computing (and got the blame, being the first rank)."""
    error, _ = run_and_fail(("hang", NUM_LAYERS - 1, NUM_TOKENS // SEGMENT_LEN - 1), timeout_s=2.0)
    assert (error.kind, error.rank, error.step) == (
        "stalled",
        1,
        step_of(NUM_LAYERS - 1, NUM_TOKENS // SEGMENT_LEN - 1),
    )
    assert "rank 1 stopped answering" in str(error) and "rank 0 waiting for every rank at a barrier" in str(error)


def test_a_setup_error_in_the_ranks_is_reported_not_hung():
    layout = SimpleNamespace(num_layers=NUM_LAYERS + 1, segment_len=SEGMENT_LEN, dependency_rule="layer_local")
    with pytest.raises(  # bad input found by the ranks stays bad input (exit 2), not a failed run
        DistributedConfigError,
        match="failed at setup: SpecError: the model factory built a 5-layer model, the schedule plans 6",
    ):
        run_pipelined(factory(), inputs(), num_procs=2, layout=layout, timeout_s=20)
    assert forkserver_children() == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(num_procs=6), "cannot split 5 layers into 6"),
        (dict(num_procs=0), "positive integer, got 0"),
        (dict(num_procs=2, device="cuda"), "2 processes on CUDA need 2 GPUs"),
        (dict(num_procs=2, device="tpu"), "device must be 'cpu' or 'cuda'"),
        (dict(num_procs=2, timeout_s=0), "timeout must be positive"),
        (dict(num_procs=2, inputs=torch.zeros(1, 0, dtype=torch.long)), r"inputs must be token ids .* got \[1, 0\]"),
    ],
)
def test_bad_configuration_fails_fast_before_any_process(options, message):
    if options.get("device") == "cuda" and torch.cuda.device_count() >= 2:
        pytest.skip("this machine has two GPUs")
    start = time.monotonic()
    with pytest.raises(RmtschedError, match=message):
        options = dict(options)
        run_pipelined(factory(), options.pop("inputs", inputs()), **options)
    assert time.monotonic() - start < 2


def test_an_unpicklable_factory_is_refused_with_a_hint():
    with pytest.raises(DistributedConfigError, match="module-level function"):
        run_pipelined(lambda device: build_toy(device=device), inputs(), num_procs=2, layout=factory()(device="cpu"))


def test_no_zombie_after_success():
    result = run_pipelined(factory(), inputs(), num_procs=2, timeout_s=20)
    assert len(result.output_sha256) == 64
    assert forkserver_children() == []


def test_a_connection_error_naming_no_peer_is_held_as_secondary_not_blamed_first():
    """A rank whose gloo transport saw a peer vanish during setup reports "Connection reset by peer" and no
    peer: that is a consequence (kind "lost"), which the launcher holds while it looks for the dead rank;
    an ordinary error stays "raised"."""
    import pickle
    from multiprocessing import Pipe, get_context

    from rmtsched.backends.distributed._board import ProgressBoard
    from rmtsched.backends.distributed.launch import _receive

    def outcome(error: str):
        receiver, sender = Pipe(duplex=False)
        record = {"rank": 0, "step": None, "where": "setup", "error": error, "traceback": "", "lost_peer": None,
                  "bad_input": False}
        sender.send_bytes(pickle.dumps(("error", record)))
        return _receive(0, receiver, SimpleNamespace(), ProgressBoard(get_context("spawn"), 2))

    lost = outcome("RuntimeError: [pair.cc:537] Read error [127.0.0.1]:7060: Connection reset by peer")
    assert (lost.kind, lost.rank) == ("lost", 0) and "lost a peer at setup" in str(lost)
    assert outcome("ValueError: something else").kind == "raised"
