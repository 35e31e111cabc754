"""The held-bytes count behind ``compare --train``'s measured memory: what autograd saves and what crosses cells,
each storage once, until it is freed; checked against autograd's own saved attributes and the runner's gradients."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F

from rmtsched.backends.torch import build_model, train_gradients
from rmtsched.calibrate.train_memory import HeldBytes, measure_train_memory
from rmtsched.sched import TrainGraph, available_train_schedulers, graph_for_tokens, make_train_schedule
from rmtsched.specs.model import load_model_spec


def saved_by_autograd(root: torch.Tensor, excluded: set[int]) -> int:
    """Bytes of the distinct storages autograd's nodes behind ``root`` expose as ``_saved_*`` attributes: an
    independent reading of what the hooks should have counted."""
    storages: dict[int, int] = {}
    seen, stack = set(), [root.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for name in dir(node):
            if name.startswith("_saved_"):
                value = getattr(node, name)
                for tensor in value if isinstance(value, tuple) else (value,):
                    if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in excluded:
                        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        stack.extend(next_node for next_node, _ in node.next_functions)
    return sum(storages.values())


def test_saved_tensors_count_once_per_storage_until_the_backward_frees_them() -> None:
    held = HeldBytes()
    x = torch.randn(1000, requires_grad=True)
    with held.saving():
        y = x.sin()  # saves x
        z = y.exp()  # saves its result z
        loss = (z * z).sum()  # saves z twice: the same storage, counted once
    assert held.live_bytes == held.peak_bytes == 2 * 4000
    loss.backward()
    assert held.live_bytes == 0 and held.peak_bytes == 8000


def test_the_count_agrees_with_autograds_saved_attributes_on_a_small_network() -> None:
    torch.manual_seed(0)
    weight, norm = torch.randn(64, 32, requires_grad=True), torch.randn(64, requires_grad=True)
    held = HeldBytes([weight, norm])
    x = torch.randn(8, 32, requires_grad=True)
    with held.saving():
        hidden = F.rms_norm(F.linear(x, weight), (64,), norm)
        loss = (torch.softmax(hidden, dim=-1) * F.silu(hidden)).sum()
    excluded = {weight.untyped_storage().data_ptr(), norm.untyped_storage().data_ptr()}
    assert held.live_bytes == saved_by_autograd(loss, excluded) > 0


def test_excluded_storages_never_count_even_through_a_view() -> None:
    weight = torch.randn(100, requires_grad=True)
    held = HeldBytes([weight])
    x = torch.randn(10, requires_grad=True)
    with held.saving():
        loss = (x * weight[:10]).sum()  # saves x and a view of weight
    assert held.live_bytes == 40
    loss.backward()
    assert held.live_bytes == 0


def test_a_tracked_tensor_counts_until_its_last_tracked_view_dies() -> None:
    held = HeldBytes()
    tensor = torch.zeros(256)
    view = tensor[:16]
    held.track(tensor)
    held.track(view)
    assert held.live_bytes == 1024
    del tensor
    gc.collect()
    assert held.live_bytes == 1024
    del view
    gc.collect()
    assert held.live_bytes == 0 and held.peak_bytes == 1024


@pytest.fixture(scope="module")
def tiny() -> tuple:
    spec = load_model_spec("armt-tiny").replace(segment_len=16)
    model = build_model(spec, seed=0)
    inputs = torch.randint(0, spec.vocab_size, (2, 4 * 16), generator=torch.Generator().manual_seed(0))
    return model, inputs, torch.roll(inputs, -1, dims=1), TrainGraph(graph_for_tokens(spec, 4 * 16))


@pytest.mark.parametrize(("name", "options"), [("sequential", {}), ("checkpointed", {"memory_budget": 5})])
def test_counting_changes_no_bit_of_the_loss_or_the_gradients(tiny: tuple, name: str, options: dict) -> None:
    model, inputs, targets, graph = tiny
    schedule = make_train_schedule(graph, name, **options)
    counted = measure_train_memory(model, inputs, targets, graph, schedule)
    plain = train_gradients(model, inputs, targets, schedule)
    assert torch.equal(counted.loss, plain.loss)
    assert counted.grads.keys() == plain.grads.keys()
    assert all(torch.equal(counted.grads[key], plain.grads[key]) for key in plain.grads)


def test_the_memory_cap_lowers_the_measured_peak_and_everything_is_released(tiny: tuple) -> None:
    model, inputs, targets, graph = tiny
    peaks = {}
    for name, options in (("sequential", {}), ("diagonal", {}), ("checkpointed", {"memory_budget": 5})):
        measured = measure_train_memory(model, inputs, targets, graph, make_train_schedule(graph, name, **options))
        assert measured.left_bytes == 0
        peaks[name] = measured.peak_bytes
    # Both uncapped schedules hold every cell's graph before the first backward: nearly the same tensors
    # (a diagonal group's batched output lives until its last row is consumed).
    assert abs(peaks["diagonal"] - peaks["sequential"]) <= 0.05 * peaks["sequential"]
    assert 0 < peaks["checkpointed"] < peaks["sequential"] / 2


@pytest.mark.parametrize("model_name", ["armt-tiny", "rmt-tiny"])
@pytest.mark.parametrize("truncation", [None, 2])
def test_every_scheduler_releases_all_it_held_by_the_end(model_name: str, truncation: int | None) -> None:
    spec = load_model_spec(model_name).replace(segment_len=8)
    model = build_model(spec, seed=0)
    inputs = torch.randint(0, spec.vocab_size, (1, 4 * 8 - 3), generator=torch.Generator().manual_seed(1))
    graph = TrainGraph(graph_for_tokens(spec, 4 * 8 - 3), truncation)
    for name in available_train_schedulers():
        options = {"memory_budget": spec.num_layers + 1} if name == "checkpointed" else {}
        measured = measure_train_memory(model, inputs, torch.roll(inputs, -1, dims=1), graph,
                                        make_train_schedule(graph, name, **options))
        assert measured.peak_bytes > 0 and measured.left_bytes == 0, name
