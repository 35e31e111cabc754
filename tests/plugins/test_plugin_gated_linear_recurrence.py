"""The gated linear recurrence plug-in: every schedule is bit-exact, the chunked maths equals the token-by-
token recurrence, the state carries information across segments, the simulator costs it, and it trains
under any training schedule with the gradients of plain BPTT."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from plugin_helpers import (
    FAST,
    assert_every_schedule_bit_exact,
    assert_rows_equal_width_one_calls,
    check_simulation,
    draw_inputs,
    graph_for,
    load_example,
    num_tokens,
    random_inputs,
    run,
    with_first_segment_changed,
)
from random_train_schedules import random_train_schedule
from train_reference import assert_same_training, sequential_bptt

from rmtsched.backends.protocol import RecurrentModel, TrainableModel
from rmtsched.backends.torch import train_gradients
from rmtsched.backends.torch.threads import intra_op_threads
from rmtsched.sched import TrainGraph, make_schedule, make_train_schedule

glr = load_example("gated_linear_recurrence")
DTYPES = (torch.float32, torch.float64)


@st.composite
def configs(draw: st.DrawFn, max_layers: int = 4):
    return glr.GLRConfig(
        num_layers=draw(st.integers(1, max_layers)),
        d_model=draw(st.integers(1, 12)),
        num_heads=draw(st.integers(1, 3)),
        key_dim=draw(st.integers(1, 6)),
        value_dim=draw(st.integers(1, 6)),
        mlp_dim=draw(st.integers(1, 16)),
        vocab_size=31,
        segment_len=draw(st.integers(1, 10)),
        chunk_len=draw(st.integers(1, 5)),
    )


def test_is_a_recurrent_model():
    assert isinstance(glr.GatedLinearRecurrence(glr.GLRConfig()), RecurrentModel)


@FAST
@given(data=st.data(), dtype=st.sampled_from(DTYPES), batch=st.integers(1, 2), seed=st.integers(0, 2**16))
def test_every_schedule_is_bit_exact(data, dtype, batch, seed):
    config = data.draw(configs())
    tokens = data.draw(num_tokens(config.segment_len))
    model = glr.GatedLinearRecurrence(config, seed=seed, dtype=dtype)
    assert_every_schedule_bit_exact(model, draw_inputs(data, config, batch, tokens, seed, dtype), seed)


@FAST
@given(data=st.data(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_forward_layers_row_equals_width_one_call(data, dtype, seed):
    """Row i of a width-w call == the width-1 call on layer l0 + i, bit for bit, from any state."""
    config = data.draw(configs(max_layers=5))
    width = data.draw(st.integers(1, config.num_layers))
    first = data.draw(st.integers(0, config.num_layers - width))
    n = data.draw(st.integers(1, config.segment_len))
    model = glr.GatedLinearRecurrence(config, seed=seed, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    state = model.init_state(2)
    state["S"].copy_(torch.randn(state["S"].shape, generator=generator, dtype=dtype))
    hidden = torch.randn(width, 2, n, config.d_model, generator=generator, dtype=dtype)
    assert_rows_equal_width_one_calls(model, hidden, first, state)


def token_by_token(model, inputs: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The recurrence written plainly, one token at a time: S <- diag(alpha_t) S + k_t v_t^T, o_t = S^T q_t."""
    c, p = model.config, model.params
    heads, dk, dv = c.num_heads, c.key_dim, c.value_dim
    batch = inputs.shape[0]
    states = [inputs.new_zeros(batch, heads, dk, dv, dtype=model.dtype) for _ in range(c.num_layers)]

    def norm(x, weight=None):
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c.norm_eps)
        return x if weight is None else x * weight

    outputs = []
    for start in range(0, inputs.shape[1], c.segment_len):
        h = p["embed"][inputs[:, start : start + c.segment_len]]
        for layer in range(c.num_layers):
            proj = norm(h, p["mix_norm"][layer]) @ p["w_in"][layer].T
            q, k, a, v, gate = proj.split([heads * dk] * 3 + [heads * dv] * 2, dim=-1)
            alpha = torch.exp(-torch.exp(a + p["decay_bias"][layer]).clamp(max=c.max_decay))
            q = q * dk**-0.5
            mixed = []
            for t in range(h.shape[1]):
                qt, kt, at = (x[:, t].view(batch, heads, dk) for x in (q, k, alpha))
                vt = v[:, t].view(batch, heads, dv)
                states[layer] = at[..., None] * states[layer] + kt[..., None] * vt[..., None, :]
                mixed.append(torch.einsum("bhk,bhkv->bhv", qt, states[layer]))
            mixed = norm(torch.stack(mixed, dim=1)).flatten(2)
            h = h + (F.silu(gate) * mixed) @ p["w_out"][layer].T
            gate_up = norm(h, p["mlp_norm"][layer]) @ p["w_gate_up"][layer].T
            h = h + (F.silu(gate_up[..., : c.mlp_dim]) * gate_up[..., c.mlp_dim :]) @ p["w_down"][layer].T
        outputs.append(norm(h, p["final_norm"]))
    return outputs, torch.stack(states)


@FAST
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_chunked_equals_token_by_token_recurrence(data, seed):
    config = data.draw(configs())
    tokens = data.draw(num_tokens(config.segment_len))
    model = glr.GatedLinearRecurrence(config, seed=seed, dtype=torch.float64)
    inputs = random_inputs(tokens, config.vocab_size, 2, seed)
    outputs, state = run(model, inputs, make_schedule(graph_for(model, tokens), "diagonal"))
    want_outputs, want_state = token_by_token(model, inputs)
    for segment, (got, want) in enumerate(zip(outputs, want_outputs, strict=True)):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-9), f"segment {segment}"
    assert torch.allclose(state["S"], want_state, rtol=1e-9, atol=1e-9)


def test_state_carries_information_across_segments():
    """Changing only segment 0 changes the last segment's output (through every layer's S), and a model
    whose state is reset between segments would not see it: the recurrence is what carries it."""
    config = glr.GLRConfig(num_layers=2, segment_len=8, chunk_len=4)
    model = glr.GatedLinearRecurrence(config, seed=2)
    inputs = random_inputs(5 * config.segment_len, config.vocab_size, 2, seed=7)
    changed = with_first_segment_changed(inputs, config.segment_len, config.vocab_size)
    schedule = make_schedule(graph_for(model, inputs.shape[1]), "diagonal")
    before, state_before = run(model, inputs, schedule)
    after, state_after = run(model, changed, schedule)
    assert not torch.equal(before[-1], after[-1])
    assert not torch.equal(state_before["S"], state_after["S"])
    last = slice(4 * config.segment_len, None)
    alone, _ = run(model, inputs[:, last], make_schedule(graph_for(model, config.segment_len), "sequential"))
    alone_changed, _ = run(model, changed[:, last], make_schedule(graph_for(model, config.segment_len), "sequential"))
    assert torch.equal(alone[0], alone_changed[0])


def test_simulates_from_cell_kernels():
    config = glr.GLRConfig(num_layers=4, segment_len=16, chunk_len=4)
    model = glr.GatedLinearRecurrence(config)
    graph = graph_for(model, 9 * config.segment_len + 5)
    check_simulation(model, graph)
    full, short = model.cell_kernels(16), model.cell_kernels(5)
    assert len(short) < len(full)  # fewer chunks, fewer launches
    assert sum(k.flops for k in short) < sum(k.flops for k in full)
    assert all(k.flops > 0 for k in full)


@FAST
@given(data=st.data(), seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(DTYPES))
def test_trains_under_every_training_schedule_with_the_gradients_of_plain_bptt(data, seed, dtype):
    """The plug-in is a ``TrainableModel``: every training scheduler and a random valid training schedule
    give ``loss.backward()``'s loss and gradients through the sequential forward, bit for bit."""
    config = data.draw(configs(max_layers=3))
    model = glr.GatedLinearRecurrence(config, seed=seed % 1000, dtype=dtype)
    assert isinstance(model, TrainableModel)
    tokens = data.draw(num_tokens(config.segment_len, max_segments=3))
    inputs = random_inputs(tokens, config.vocab_size, 2, seed)
    targets = torch.roll(inputs, -1, dims=1)
    truncation = data.draw(st.one_of(st.none(), st.integers(1, 4)))
    graph = TrainGraph(graph_for(model, tokens), truncation)
    schedules = {name: make_train_schedule(graph, name) for name in ("sequential", "diagonal", "greedy")}
    schedules["random"] = random_train_schedule(graph, random.Random(seed))
    with intra_op_threads(1):  # tiny GEMMs: one thread skips the per-layout thread probes (thread-exactness
        expected = sequential_bptt(model, inputs, targets, truncation)  # is tested on the built-in models)
        for name, schedule in schedules.items():
            assert_same_training(model, inputs, targets, schedule, truncation, f"{config}/{name}", expected)


def test_training_gradients_match_finite_differences_of_the_loss():
    """An fp64 check independent of our backward formulas: a directional derivative of the loss."""
    config = glr.GLRConfig(num_layers=2, d_model=6, num_heads=1, key_dim=3, value_dim=4, mlp_dim=8, vocab_size=13,
                           segment_len=5, chunk_len=2)
    model = glr.GatedLinearRecurrence(config, seed=3, dtype=torch.float64)
    inputs = random_inputs(12, config.vocab_size, 2, 4)
    targets = torch.roll(inputs, -1, dims=1)
    schedule = make_train_schedule(TrainGraph(graph_for(model, 12)), "diagonal")
    with intra_op_threads(1):
        result = train_gradients(model, inputs, targets, schedule)
    generator = torch.Generator().manual_seed(0)
    direction = {name: torch.randn(value.shape, generator=generator, dtype=torch.float64)
                 for name, value in model.params.items()}
    predicted = sum((result.grads[name] * direction[name]).sum() for name in result.grads)
    original = {name: value.clone() for name, value in model.params.items()}

    def loss_at(step: float) -> float:
        for name, value in model.params.items():
            value.copy_(original[name] + step * direction[name])
        return float(train_gradients(model, inputs, targets, schedule).loss)

    eps = 1e-6
    with intra_op_threads(1):
        numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
        loss_at(0.0)
    assert abs(numeric - float(predicted)) <= 1e-6 * max(1.0, abs(numeric)), (numeric, float(predicted))
