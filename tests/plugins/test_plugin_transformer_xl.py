"""The Transformer-XL cache plug-in: every schedule is bit-exact, the maths matches a naive reference,
the cache carries exactly L segments of context, and the simulator costs it from its kernel list."""

from __future__ import annotations

import math

import torch
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

from rmtsched.backends.protocol import RecurrentModel
from rmtsched.sched import make_schedule

xl = load_example("transformer_xl_cache")
DTYPES = (torch.float32, torch.float64)


@st.composite
def configs(draw: st.DrawFn, max_layers: int = 4):
    heads = draw(st.integers(1, 3))
    return xl.XLConfig(
        num_layers=draw(st.integers(1, max_layers)),
        d_model=heads * draw(st.sampled_from((2, 4, 6))),
        num_heads=heads,
        mlp_dim=draw(st.integers(1, 24)),
        vocab_size=29,
        segment_len=draw(st.integers(1, 8)),
    )


def test_is_a_recurrent_model():
    assert isinstance(xl.TransformerXLCache(xl.XLConfig()), RecurrentModel)


@FAST
@given(data=st.data(), dtype=st.sampled_from(DTYPES), batch=st.integers(1, 2), seed=st.integers(0, 2**16))
def test_every_schedule_is_bit_exact(data, dtype, batch, seed):
    config = data.draw(configs())
    tokens = data.draw(num_tokens(config.segment_len))
    model = xl.TransformerXLCache(config, seed=seed, dtype=dtype)
    assert_every_schedule_bit_exact(model, draw_inputs(data, config, batch, tokens, seed, dtype), seed)


@FAST
@given(data=st.data(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_forward_layers_row_equals_width_one_call(data, dtype, seed):
    """The law behind exactness: row i of a width-w call == the width-1 call on layer l0 + i, bit for bit,
    from any state (partly filled caches included)."""
    config = data.draw(configs(max_layers=5))
    width = data.draw(st.integers(1, config.num_layers))
    first = data.draw(st.integers(0, config.num_layers - width))
    n = data.draw(st.integers(1, config.segment_len))
    model = xl.TransformerXLCache(config, seed=seed, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    state = model.init_state(2)
    state["cache"].copy_(torch.randn(state["cache"].shape, generator=generator, dtype=dtype))
    state["valid"].copy_(torch.randint(0, config.segment_len + 1, (config.num_layers,), generator=generator))
    hidden = torch.randn(width, 2, n, config.d_model, generator=generator, dtype=dtype)
    assert_rows_equal_width_one_calls(model, hidden, first, state)


def naive_reference(model, inputs: torch.Tensor) -> list[torch.Tensor]:
    """Transformer-XL written plainly: per layer, a list of past inputs; attention over the last T of them
    plus the causal current segment, explicit softmax; rotary positions as the plug-in numbers them."""
    config, p = model.config, model.params
    big_t, hd, eps = config.segment_len, config.head_dim, config.norm_eps
    memories = [inputs.new_zeros(inputs.shape[0], 0, config.d_model, dtype=model.dtype)] * config.num_layers
    outputs = []

    def norm(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    def rotate(x, positions):  # x [B, t, H, hd]
        inv_freq = 1.0 / config.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        angles = torch.cat([positions[:, None] * inv_freq] * 2, dim=-1)[:, None, :].to(x.dtype)
        halves = torch.cat((-x[..., hd // 2 :], x[..., : hd // 2]), dim=-1)
        return x * angles.cos() + halves * angles.sin()

    for start in range(0, inputs.shape[1], big_t):
        h = p["embed"][inputs[:, start : start + big_t]]
        n = h.shape[1]
        for layer in range(config.num_layers):
            memory = memories[layer][:, -big_t:] if memories[layer].shape[1] else memories[layer]
            context = torch.cat((memory, h), dim=1)
            positions = torch.arange(big_t - memory.shape[1], big_t + n, dtype=torch.float64)
            x = norm(context, p["attn_norm"][layer])
            q = (x[:, -n:] @ p["wq"][layer].T).unflatten(-1, (config.num_heads, hd))
            k, v = (x @ p["wkv"][layer].T).unflatten(-1, (2 * config.num_heads, hd)).chunk(2, dim=2)
            q, k = rotate(q, positions[-n:]), rotate(k, positions)
            scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(hd)
            scores = scores.masked_fill(positions[None, :] > positions[-n:, None], -math.inf)
            attn = torch.einsum("bhqk,bkhe->bqhe", scores.softmax(-1), v).flatten(2)
            h2 = h + attn @ p["wo"][layer].T
            gate, up = (norm(h2, p["mlp_norm"][layer]) @ p["w_gate_up"][layer].T).chunk(2, dim=-1)
            memories[layer] = torch.cat((memories[layer], h), dim=1)[:, -big_t:]
            h = h2 + (torch.nn.functional.silu(gate) * up) @ p["w_down"][layer].T
        outputs.append(norm(h, p["final_norm"]))
    return outputs


@FAST
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_sequential_matches_naive_reference(data, seed):
    config = data.draw(configs())
    tokens = data.draw(num_tokens(config.segment_len))
    model = xl.TransformerXLCache(config, seed=seed, dtype=torch.float64)
    inputs = random_inputs(tokens, config.vocab_size, 2, seed)
    outputs, _ = run(model, inputs, make_schedule(graph_for(model, tokens), "sequential"))
    for segment, (got, want) in enumerate(zip(outputs, naive_reference(model, inputs), strict=True)):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-10), f"segment {segment}"


def test_cache_carries_exactly_num_layers_segments_of_context():
    """Changing segment 0 changes the outputs of segments 0..L (each layer's cache reaches one segment
    further back) and leaves every later segment bit-for-bit unchanged: the state matters, as far as it goes."""
    config = xl.XLConfig(num_layers=3, segment_len=4)
    model = xl.TransformerXLCache(config, seed=3)
    inputs = random_inputs(8 * config.segment_len, config.vocab_size, 2, seed=5)
    changed = with_first_segment_changed(inputs, config.segment_len, config.vocab_size)
    schedule = make_schedule(graph_for(model, inputs.shape[1]), "diagonal")
    before, _ = run(model, inputs, schedule)
    after, _ = run(model, changed, schedule)
    for segment, (a, b) in enumerate(zip(before, after, strict=True)):
        assert torch.equal(a, b) == (segment > config.num_layers), f"segment {segment}"


def test_first_segment_ignores_the_empty_cache():
    """With an all-zero, zero-length cache the first segment equals a run whose cache holds garbage that is
    masked out (valid = 0): masking, not the zeros, is what hides the cache."""
    config = xl.XLConfig(num_layers=2)
    model = xl.TransformerXLCache(config, seed=1)
    hidden = torch.randn(2, 1, config.segment_len, config.d_model, generator=torch.Generator().manual_seed(0))
    clean, dirty = model.init_state(1), model.init_state(1)
    dirty["cache"].normal_(generator=torch.Generator().manual_seed(1))
    out_clean = model.forward_layers(hidden, range(2), clean)
    out_dirty = model.forward_layers(hidden, range(2), dirty)
    assert torch.equal(out_clean, out_dirty)
    assert torch.equal(clean["valid"], torch.tensor([config.segment_len] * 2))


def test_simulates_from_cell_kernels():
    config = xl.XLConfig(num_layers=4, segment_len=8)
    model = xl.TransformerXLCache(config)
    graph = graph_for(model, 10 * config.segment_len + 3)
    check_simulation(model, graph)
    full, short = model.cell_kernels(8), model.cell_kernels(3)
    assert [k.name for k in full] == [k.name for k in short]
    assert sum(k.flops for k in short) < sum(k.flops for k in full)
    assert all(k.flops > 0 for k in full)
