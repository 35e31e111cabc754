"""Training on P processes (gloo on 127.0.0.1): the loss and every gradient equal one process's, bit for bit.

The one-process run (``train_gradients`` on the same schedule, itself equal to the sequential ``backward()``
oracle in tests/backends/test_backend_train.py) runs at one intra-op thread, like the ranks (fast for tiny
GEMMs here; the thread count does not change training bits, test_backend_train.py shows). Failures end
every rank with an error naming the rank and the step.
"""

from __future__ import annotations

import os

import pytest
import torch
from train_helpers import batch, pipelined, segments_alternating, tiny_model, train_graph

from rmtsched.backends.distributed import DistributedConfigError, DistributedError, train_launch, train_pipelined
from rmtsched.backends.torch import build_model
from rmtsched.backends.torch.threads import intra_op_threads
from rmtsched.backends.torch.train_executor import train_gradients
from rmtsched.sched import make_train_schedule

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(120)]


def assert_same_training(model, schedule, truncation) -> None:
    inputs, targets = batch(model)
    with intra_op_threads(1):
        expected = train_gradients(model, inputs, targets, schedule, truncation=truncation)
    got = train_pipelined(model, inputs, targets, schedule, num_procs=schedule.num_devices, truncation=truncation,
                          threads_per_proc=1, timeout_s=30)  # fmt: skip
    assert torch.equal(got.loss, expected.loss), f"loss {got.loss} != {expected.loss}"
    assert got.grads.keys() == expected.grads.keys()
    for name, grad in expected.grads.items():
        assert torch.equal(got.grads[name], grad), f"{name} differs by {(got.grads[name] - grad).abs().max():.3e}"
    assert got.stats.steps == schedule.num_steps


@pytest.mark.parametrize(
    ("family", "variant", "num_procs", "dtype", "truncation"),
    [
        ("armt", "paper", 2, torch.float32, None),
        ("armt", "normalized", 3, torch.float32, 2),
        ("rmt", "paper", 2, torch.float32, 2),
        ("rmt", "paper", 3, torch.float64, None),
    ],
)
def test_pipelined_processes_give_one_process_gradients_bit_for_bit(family, variant, num_procs, dtype, truncation):
    model = tiny_model(family, variant, dtype)
    assert_same_training(model, pipelined(train_graph(model, truncation), num_procs), truncation)


def test_weights_used_on_both_ranks_fold_in_one_process_order():
    """Every layer's cells alternate between the ranks, so every weight's fold spans both."""
    model = tiny_model("armt", "normalized")
    assert_same_training(model, segments_alternating(train_graph(model, None)), None)


def test_a_schedule_on_other_devices_than_processes_is_refused_before_any_start():
    model = tiny_model("armt")
    schedule = make_train_schedule(train_graph(model, None), "diagonal")
    with pytest.raises(DistributedConfigError, match=r"'diagonal' runs on 1 device\(s\) but 2 processes"):
        train_pipelined(model, *batch(model), schedule, num_procs=2)


def test_float_inputs_are_refused_before_any_start():
    model = tiny_model("armt")
    inputs, targets = batch(model)
    with pytest.raises(DistributedConfigError, match=r"token ids .*got inputs \[2, 23\] \(torch.float32\)"):
        train_pipelined(model, inputs.float(), targets, pipelined(train_graph(model, None), 2), num_procs=2)


def build_model_broken_on_rank_1(spec, **kwargs):
    """``build_model``, but on rank 1 layer 2's output projection has a wrong shape (its first F fails)."""
    model = build_model(spec, **kwargs)
    if torch.distributed.get_rank() == 1:
        model.params["wo"] = model.params["wo"][:, :, :-1]
    return model


def test_a_rank_that_fails_names_its_rank_and_step(monkeypatch):
    model = tiny_model("armt")
    graph = train_graph(model, None)
    schedule = pipelined(graph, 2)
    first_step_of_rank_1 = next(i for i, step in enumerate(schedule.steps) if step.device == 1)
    monkeypatch.setattr(train_launch, "build_model", build_model_broken_on_rank_1)  # pickled by name to the ranks
    with pytest.raises(DistributedError) as caught:
        train_pipelined(model, *batch(model), schedule, num_procs=2, threads_per_proc=1, timeout_s=30)
    error = caught.value
    assert (error.kind, error.rank, error.step) == ("raised", 1, first_step_of_rank_1)
    assert f"rank 1 failed at step {first_step_of_rank_1} (F cells [(2, 0)])" in str(error)
    assert f"[ {first_step_of_rank_1}]" in error.__notes__[0].split("backward")[0]  # the failed F cell, marked


def build_model_dying_on_rank_1(spec, **kwargs):
    """``build_model``, but rank 1 exits at once, with no result."""
    if torch.distributed.get_rank() == 1:
        os._exit(7)
    return build_model(spec, **kwargs)


def test_a_rank_that_dies_is_named(monkeypatch):
    model = tiny_model("rmt")
    monkeypatch.setattr(train_launch, "build_model", build_model_dying_on_rank_1)
    with pytest.raises(DistributedError, match=r"rank 1 exited \(7\) without a result") as caught:
        train_pipelined(model, *batch(model), pipelined(train_graph(model, None), 2), num_procs=2, timeout_s=30)
    assert (caught.value.kind, caught.value.rank) == ("died", 1)
