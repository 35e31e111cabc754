"""Training under any schedule: loss and every gradient equal ``loss.backward()`` through the sequential forward.

The oracle (``train_reference.sequential_bptt``) builds one autograd graph over the whole sequence; the
executor runs each step's cells as batched groups and passes gradients between cells. Equality is exact
(``torch.equal``) in fp32 and fp64, for every built-in training scheduler and random valid schedules, both
ARMT maths variants and RMT, with and without truncation. The loss is checked against the inference path
(``execute``, which the parity tests tie to Hugging Face and the reference), and the gradients against
autograd through a plain transcription of the layer (``train_plain``).
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from backend_helpers import FAST, random_inputs, sequence_lengths, tiny_specs
from hypothesis import given
from hypothesis import strategies as st
from random_train_schedules import random_train_schedule
from train_plain import plain_layer
from train_reference import assert_same_training, sequential_bptt

from rmtsched.backends.torch import build_model, execute
from rmtsched.backends.torch.executor import model_graph
from rmtsched.backends.torch.recall_task import recall_batch, train_recall
from rmtsched.backends.torch.threads import intra_op_threads
from rmtsched.backends.torch.train_executor import train_gradients, train_step
from rmtsched.errors import RmtschedError
from rmtsched.sched import TrainGraph, make_schedule, make_train_schedule
from rmtsched.specs.model import ModelSpec

CASES = [("armt", "paper"), ("armt", "normalized"), ("rmt", "paper")]


@pytest.fixture(autouse=True)
def one_thread(request: pytest.FixtureRequest):
    """One intra-op thread: tiny GEMMs on a shared two-core machine run ~50x slower with two. Oracle and
    executor always run at the same count; ``test_..._at_the_default_thread_count`` covers the default."""
    if "default_thread_count" in request.node.name:
        yield
        return
    with intra_op_threads(1):
        yield


def small_spec(family: str, variant: str, **changes: object) -> ModelSpec:
    fields = dict(name="train", family=family, armt_variant=variant, num_layers=3, d_model=16, num_heads=2,
                  num_kv_heads=1, mlp_dim=24, vocab_size=29, segment_len=5, mem_tokens=2, mem_key_dim=4, dtype_bytes=4)
    return ModelSpec(**{**fields, **changes})


def next_token_targets(inputs: torch.Tensor) -> torch.Tensor:
    """Each token's successor; the last token is scored against the first (so even one token scores)."""
    return torch.roll(inputs, -1, dims=1)


@pytest.mark.parametrize(("family", "variant"), CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("truncation", [None, 2])
def test_every_training_scheduler_gives_sequential_bptt_gradients_bit_for_bit(family, variant, dtype, truncation):
    model = build_model(small_spec(family, variant), seed=1, dtype=dtype)
    inputs = random_inputs(model.spec, 2, 23, seed=3)  # 5 segments, the last one short
    targets = next_token_targets(inputs)
    graph = TrainGraph(model_graph(model, 23), truncation)
    schedules = {
        "sequential": make_train_schedule(graph, "sequential"),
        "diagonal": make_train_schedule(graph, "diagonal"),
        "diagonal/w2": make_train_schedule(graph, "diagonal", max_width=2),
        "checkpointed": make_train_schedule(graph, "checkpointed", memory_budget=4),
        "greedy": make_train_schedule(graph, "greedy"),
        "pipelined/P2": make_train_schedule(graph, "pipelined", num_devices=2),  # devices run in one process here
        "random": random_train_schedule(graph, random.Random(7)),
    }
    for name, schedule in schedules.items():
        assert_same_training(model, inputs, targets, schedule, truncation, f"{family}/{variant}/{dtype}/{name}")


def test_diagonal_training_is_exact_at_the_default_thread_count() -> None:
    model = build_model(small_spec("armt", "paper"), seed=1)
    inputs = random_inputs(model.spec, 2, 12, seed=3)
    schedule = make_train_schedule(TrainGraph(model_graph(model, 12)), "diagonal")
    assert_same_training(model, inputs, next_token_targets(inputs), schedule, None, "default threads")


@pytest.mark.parametrize("family", ["armt", "rmt"])
def test_training_at_two_threads_equals_one_thread_default_thread_count(family: str) -> None:
    """Diagonal at 2 intra-op threads against sequential at 1: every GEMM (the LM head too) is thread-exact."""
    model = build_model(small_spec(family, "paper"), seed=1)
    inputs = random_inputs(model.spec, 2, 18, seed=3)
    targets = next_token_targets(inputs)
    graph = TrainGraph(model_graph(model, 18))
    with intra_op_threads(1):
        expected = train_gradients(model, inputs, targets, make_train_schedule(graph, "sequential"))
    with intra_op_threads(2):
        got = train_gradients(model, inputs, targets, make_train_schedule(graph, "diagonal"))
    assert torch.equal(got.loss, expected.loss)
    for name, grad in expected.grads.items():
        assert torch.equal(got.grads[name], grad), name


@FAST
@given(family=st.sampled_from(("armt", "rmt")), data=st.data(), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from((torch.float32, torch.float64)))
def test_every_random_training_schedule_is_exact_on_random_tiny_models(family, data, seed, dtype) -> None:
    spec = data.draw(tiny_specs(family))
    spec = spec.replace(num_layers=min(spec.num_layers, 3))
    num_tokens = data.draw(sequence_lengths(spec.segment_len))
    model = build_model(spec, seed=seed % 1000, dtype=dtype)
    inputs = random_inputs(spec, 2, num_tokens, seed=seed)
    graph_segments = -(-num_tokens // spec.segment_len)
    truncation = data.draw(st.one_of(st.none(), st.integers(1, graph_segments + 1)))
    graph = TrainGraph(model_graph(model, num_tokens), truncation)
    schedule = random_train_schedule(graph, random.Random(seed))
    assert_same_training(model, inputs, next_token_targets(inputs), schedule, truncation, f"{spec}")


@pytest.mark.parametrize(("family", "variant"), CASES)
def test_the_training_loss_is_the_loss_of_the_inference_path(family: str, variant: str) -> None:
    model = build_model(small_spec(family, variant), seed=2, dtype=torch.float64)
    inputs = random_inputs(model.spec, 2, 23, seed=4)
    targets = next_token_targets(inputs)
    outputs = execute(model, inputs, make_schedule(model_graph(model, 23), "sequential")).outputs
    logits = torch.cat([model.logits(output) for output in outputs], dim=1)
    expected = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum") / targets.numel()
    loss, _ = sequential_bptt(model, inputs, targets)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize(("family", "variant"), CASES)
@pytest.mark.parametrize("truncation", [None, 2])
def test_gradients_equal_autograd_through_a_plain_transcription(family: str, variant: str, truncation) -> None:
    """The hand-written backward kernels (``grad_rowmm``) against autograd's own derivatives of stock ops."""
    model = build_model(small_spec(family, variant), seed=5, dtype=torch.float64)
    inputs = random_inputs(model.spec, 2, 23, seed=6)
    targets = next_token_targets(inputs)
    expected_loss, expected = sequential_bptt(model, inputs, targets, truncation, layer_fn=plain_layer)
    graph = TrainGraph(model_graph(model, 23), truncation)
    result = train_gradients(model, inputs, targets, make_train_schedule(graph, "diagonal"), truncation=truncation)
    torch.testing.assert_close(result.loss, expected_loss, rtol=1e-12, atol=0)
    assert result.grads.keys() == expected.keys()
    for name, grad in expected.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(result.grads[name], grad, rtol=1e-9, atol=1e-12, msg=name)


def test_train_step_applies_the_gradients_through_the_optimizer() -> None:
    model = build_model(small_spec("armt", "paper"), seed=1)
    inputs = random_inputs(model.spec, 2, 10, seed=5)
    targets = next_token_targets(inputs)
    schedule = make_train_schedule(TrainGraph(model_graph(model, 10)), "diagonal")
    before = {name: value.clone() for name, value in model.params.items()}
    grads = train_gradients(model, inputs, targets, schedule).grads
    optimizer = torch.optim.SGD(list(model.params.values()), lr=0.5)
    train_step(model, inputs, targets, schedule, optimizer)
    for name, value in model.params.items():
        assert torch.equal(value, before[name] - 0.5 * grads[name]), name
        assert value.grad is None


@pytest.mark.parametrize(
    ("inputs", "targets", "needle"),
    [
        (torch.zeros(2, 10), torch.zeros(2, 10, dtype=torch.long), "training needs token ids"),
        (torch.zeros(2, 10, dtype=torch.long), torch.zeros(2, 9, dtype=torch.long), "targets of the same shape"),
        (torch.zeros(2, 10, dtype=torch.long), torch.full((2, 10), -100), "every target is -100"),
    ],
)
def test_bad_training_inputs_are_refused_naming_them(inputs, targets, needle: str) -> None:
    model = build_model(small_spec("armt", "paper"), seed=1)
    schedule = make_train_schedule(TrainGraph(model_graph(model, 10)), "sequential")
    with pytest.raises(RmtschedError, match=needle):
        train_gradients(model, inputs, targets, schedule)


def test_a_schedule_for_another_input_length_is_refused() -> None:
    model = build_model(small_spec("rmt", "paper"), seed=1)
    schedule = make_train_schedule(TrainGraph(model_graph(model, 20)), "sequential")
    inputs = random_inputs(model.spec, 1, 10, seed=0)
    with pytest.raises(RmtschedError, match="not in the graph of 3 layers x 2 segments"):
        train_gradients(model, inputs, next_token_targets(inputs), schedule)


def test_loss_goes_down_on_associative_recall() -> None:
    spec = small_spec("armt", "paper", vocab_size=16, segment_len=4, d_model=32, num_heads=4, num_kv_heads=2)
    model = build_model(spec, seed=0)
    results = train_recall(model, "diagonal", steps=25, batch_size=16, num_pairs=3, lr=3e-3)
    losses = [float(result.loss) for result in results]
    assert sum(losses[-5:]) / 5 < losses[0] - 0.3, losses


def test_recall_batches_score_the_queried_keys_value_only() -> None:
    inputs, targets = recall_batch(20, 3, 5, torch.Generator().manual_seed(0))
    assert inputs.shape == targets.shape == (5, 7)
    assert (targets[:, :-1] == -100).all()
    for row, target in zip(inputs.tolist(), targets[:, -1].tolist(), strict=True):
        keys, values = row[0:6:2], row[1:6:2]
        assert len(set(keys)) == 3 and all(k < 10 for k in keys) and all(10 <= v < 20 for v in values)
        assert target == values[keys.index(row[-1])]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("family", ["armt", "rmt"])
def test_cuda_training_gradients_match_sequential_bptt_within_tolerance(family: str) -> None:
    """On CUDA the contract is a tolerance: 1e-5 relative (fp32) against the same oracle on the same device."""
    model = build_model(small_spec(family, "paper"), seed=1, device="cuda")
    inputs = random_inputs(model.spec, 2, 23, seed=3).cuda()
    targets = next_token_targets(inputs)
    expected_loss, expected = sequential_bptt(model, inputs, targets)
    graph = TrainGraph(model_graph(model, 23))
    for name in ("diagonal", "checkpointed"):
        options = {"memory_budget": 4} if name == "checkpointed" else {}
        result = train_gradients(model, inputs, targets, make_train_schedule(graph, name, **options))
        torch.testing.assert_close(result.loss, expected_loss, rtol=1e-5, atol=1e-7)
        for key, grad in expected.items():
            torch.testing.assert_close(result.grads[key], grad, rtol=1e-5, atol=1e-7, msg=f"{name}: {key}")


def test_folding_weight_gradients_in_the_wrong_order_changes_the_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is not vacuous: summing each weight's per-use gradients first use first breaks equality."""
    import rmtsched.backends.torch.train_executor as train_executor

    build_folds = train_executor.TrainRunner._folds

    def ascending(runner):
        folds = build_folds(runner)
        for fold in folds.values():
            fold.order.reverse()
        return folds

    model = build_model(small_spec("armt", "paper"), seed=1)
    inputs = random_inputs(model.spec, 2, 23, seed=3)
    targets = next_token_targets(inputs)
    _, expected = sequential_bptt(model, inputs, targets)
    monkeypatch.setattr(train_executor.TrainRunner, "_folds", ascending)
    schedule = make_train_schedule(TrainGraph(model_graph(model, 23)), "sequential")
    result = train_gradients(model, inputs, targets, schedule)
    assert any(not torch.equal(result.grads[name], grad) for name, grad in expected.items())
