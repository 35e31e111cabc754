"""The ARMT and RMT models: the recurrence is real, initialisation is deterministic, slices are exact."""

from __future__ import annotations

import pytest
import torch
from backend_helpers import build_model, execute, graph_for, random_inputs

from rmtsched.backends.protocol import RecurrentModel
from rmtsched.backends.torch import init_params, param_shapes
from rmtsched.backends.torch.models import parse_dtype
from rmtsched.errors import SpecError
from rmtsched.sched import make_schedule
from rmtsched.specs.armt_cost import armt_cell_kernels
from rmtsched.specs.model import ModelSpec, load_model_spec

SPEC = ModelSpec(name="m", family="armt", num_layers=3, d_model=32, num_heads=4, num_kv_heads=2, mlp_dim=48,
                 vocab_size=60, segment_len=6, mem_tokens=3, mem_key_dim=4)


def _run(model, inputs, name="diagonal"):
    return execute(model, inputs, make_schedule(graph_for(model, inputs.shape[1]), name))


@pytest.mark.parametrize("family", ["armt", "rmt"])
def test_changing_segment_zero_changes_later_segments(family: str) -> None:
    """Attention never crosses segments, so only the memory can carry segment 0 into segments 1.. S-1."""
    spec = SPEC.replace(family=family)
    model = build_model(spec, seed=1)
    inputs = random_inputs(spec, 1, 4 * spec.segment_len, seed=2)
    changed = inputs.clone()
    changed[0, 0] = (inputs[0, 0] + 1) % spec.vocab_size
    base, other = _run(model, inputs), _run(model, changed)
    for segment in range(1, 4):
        assert (base.outputs[segment] - other.outputs[segment]).abs().max() > 1e-6


def test_without_memory_later_segments_ignore_segment_zero() -> None:
    """Control for the test above: with M = 0 nothing is written, so later segments cannot change."""
    spec = SPEC.replace(mem_tokens=0)
    model = build_model(spec, seed=1)
    inputs = random_inputs(spec, 1, 3 * spec.segment_len, seed=2)
    changed = inputs.clone()
    changed[0, 0] = (inputs[0, 0] + 1) % spec.vocab_size
    base, other = _run(model, inputs), _run(model, changed)
    assert not torch.equal(base.outputs[0], other.outputs[0])
    assert torch.equal(base.outputs[1], other.outputs[1]) and torch.equal(base.outputs[2], other.outputs[2])
    assert not base.final_state["assoc"].any()


@pytest.mark.parametrize("preset", ["armt-tiny", "armt-small"])
@pytest.mark.parametrize("variant", ["paper", "normalized"])
def test_seeded_memory_matters_in_both_variants(preset: str, variant: str) -> None:
    """Zeroing W_mv (as the reference initialises it) moves later segments' outputs by O(0.1..1) (measured
    0.6-1.3 on outputs of size ~4), so a seeded model's memory counts in the paper variant too (its phi is not
    normalised, but the read A^T phi / z . phi is a weighted mean of values, whatever phi's scale)."""
    spec = load_model_spec(preset).replace(armt_variant=variant, segment_len=8, num_layers=4)
    model = build_model(spec, seed=1)
    params = dict(model.params)
    params["mem_wkvb"] = params["mem_wkvb"].clone()
    params["mem_wkvb"][:, spec.mem_key_dim : spec.mem_key_dim + spec.d_model] = 0
    silent = build_model(spec, params=params)
    inputs = random_inputs(spec, 1, 3 * spec.segment_len, seed=2)
    base, other = _run(model, inputs), _run(silent, inputs)
    assert torch.equal(base.outputs[0], other.outputs[0])
    assert (base.outputs[2] - other.outputs[2]).abs().max() > 0.1


def test_activations_stay_order_one_over_many_layers_and_segments() -> None:
    spec = load_model_spec("armt-tiny").replace(num_layers=12, segment_len=4, mem_tokens=4)
    model = build_model(spec, seed=0)
    inputs = random_inputs(spec, 1, 30 * spec.segment_len, seed=3)
    result = _run(model, inputs)
    for output in result.outputs:
        assert torch.isfinite(output).all()
        assert 0.5 < output.std().item() < 2.0
    assert torch.isfinite(result.final_state["assoc"]).all()
    assert result.last_hidden.abs().max() < 50


def test_initialisation_is_deterministic_and_slices_draw_the_same_weights() -> None:
    first, second = init_params(SPEC, seed=4), init_params(SPEC, seed=4)
    other = init_params(SPEC, seed=5)
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not torch.equal(first["wqkv"], other["wqkv"])
    part = init_params(SPEC, seed=4, layers=range(1, 3))
    assert torch.equal(part["w_down"], first["w_down"][1:3]) and torch.equal(part["embed"], first["embed"])
    wide = init_params(SPEC, seed=4, dtype=torch.float64)
    assert torch.equal(wide["wqkv"], first["wqkv"].double())
    built = build_model(SPEC, seed=4, layers=range(1, 3))
    sliced = build_model(SPEC, seed=4).slice_layers(1, 3)
    assert all(torch.equal(built.params[name], sliced.params[name]) for name in built.params)


def test_parameter_dict_matches_the_documented_shapes() -> None:
    model = build_model(SPEC, seed=0)
    shapes = param_shapes(SPEC)
    assert {name: tuple(value.shape) for name, value in model.params.items()} == shapes
    assert shapes["wqkv"] == (3, (4 + 2 * 2) * 8, 32) and shapes["mem_wkvb"] == (3, 4 + 32 + 1, 32)
    assert "mem_wq" not in param_shapes(SPEC.replace(family="rmt"))


def test_mis_shaped_parameters_are_listed() -> None:
    params = init_params(SPEC, seed=0)
    params["wo"] = params["wo"][:, :, :-1]
    del params["memory"]
    params["extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing memory.*unexpected extra.*wo has shape \[3, 32, 31\]"):
        build_model(SPEC, params=params)


def test_models_satisfy_the_protocol_and_describe_their_cost() -> None:
    for family in ("armt", "rmt"):
        model = build_model(SPEC.replace(family=family), seed=0)
        assert isinstance(model, RecurrentModel)
        kernels = {k.name: k for k in model.cell_kernels(SPEC.segment_len)}
        assert all(k.flops > 0 for k in kernels.values())
        tokens = SPEC.replace(family=family).tokens_per_cell(SPEC.segment_len)
        assert kernels["qkv_proj"].flops == 2 * tokens * 32 * (4 + 2 * 2) * 8
        assert ("mem_write_update" in kernels) == (family == "armt")
        assert model.cell_kernels(5) == armt_cell_kernels(SPEC.replace(family=family), 5)  # the simulator's


def test_unknown_dtype_names_are_rejected() -> None:
    assert parse_dtype("fp64") is torch.float64
    with pytest.raises(SpecError, match="unknown dtype 'fp8'"):
        parse_dtype("fp8")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_runs_every_schedule_close_to_sequential() -> None:
    model = build_model(SPEC, seed=1, dtype=torch.bfloat16, device="cuda")
    inputs = random_inputs(SPEC, 2, 5 * SPEC.segment_len + 2, seed=2).cuda()
    reference = _run(model, inputs, "sequential")
    for name in ("diagonal", "greedy"):
        result = _run(model, inputs, name)
        for a, b in zip(reference.outputs, result.outputs, strict=True):
            assert a.device.type == "cuda" and (a.float() - b.float()).abs().max() < 5e-2
