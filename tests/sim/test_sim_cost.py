"""The cost model: hand-counted FLOPs of a cell, the batched-step laws, and plug-in kernel lists."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_helpers import synthetic_workload, unit_hardware

from rmtsched.sim import CostModel, armt_cell_kernels, full_attention_workload, workload_from_model, workload_from_spec
from rmtsched.specs.armt_cost import causal_pairs, decoder_layer_kernels, total_flops
from rmtsched.specs.cost import KernelWork
from rmtsched.specs.hardware import HardwareSpec, available_hardware_specs, load_hardware_spec
from rmtsched.specs.model import load_model_spec

SETTINGS = settings(max_examples=30, deadline=None)


def by_name(kernels: list[KernelWork]) -> dict[str, KernelWork]:
    return {kernel.name: kernel for kernel in kernels}


def test_armt_tiny_cell_flops_match_a_hand_count() -> None:
    # armt-tiny: d 64, 4 heads of 16, 2 kv heads (kv_dim 32), MLP 256, T 64 + M 8 = 72 tokens,
    # d_mem 16, nu 3 -> phi 96. Counted by hand, term by term.
    kernels = by_name(armt_cell_kernels(load_model_spec("armt-tiny"), 64))
    assert kernels["qkv_proj"].flops == 2 * 72 * 64 * 128 == 1_179_648
    assert kernels["attention"].flops == 4 * 64 * 2628 + 5 * 4 * 2628 == 725_328  # 72 * 73 / 2 = 2628 pairs
    assert kernels["o_proj"].flops == 589_824
    assert kernels["gate_up_proj"].flops == 4_718_592
    assert kernels["down_proj"].flops == 2_359_296
    decoder = 1_179_648 + 725_328 + 589_824 + 4_718_592 + 2_359_296 + 36_864 + 20_736 + 9_216 + 92_160
    read = 147_456 + 9_216 + 898_560 + 9_288  # W_q key, DPFP, A^T phi and z.phi, divide + residual
    write = 82_944 + 1_056 + 100_352 + 110_096  # k/v/beta proj, DPFP + sigmoid, v_prev, A and z update
    assert decoder == 9_731_664
    assert total_flops(list(kernels.values())) == decoder + read + write == 11_090_632


def test_projection_flops_are_two_per_token_per_weight() -> None:
    spec = load_model_spec("armt-llama-1b")
    kernels = by_name(decoder_layer_kernels(spec, 1040))
    params = 2048 * (2048 + 2 * 512) + 2048 * 2048 + 3 * 2048 * 8192
    projections = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
    assert sum(kernels[name].flops for name in projections) == 2 * 1040 * params
    assert sum(kernels[name].weight_bytes for name in projections) == 2 * params


def test_armt_tiny_layer_weights_are_counted_once_per_kernel() -> None:
    cost = CostModel(workload_from_spec(load_model_spec("armt-tiny")), load_hardware_spec("cpu-generic"))
    # projections 61,440 + two RMSNorm weights 128 + W_q 64x16 + W_k/W_v/W_beta 64x(16+64+1), fp32.
    assert cost.layer_weight_bytes(64) == (61_440 + 128 + 1_024 + 5_184) * 4


def test_rmt_cell_is_a_decoder_layer_on_t_plus_2m_tokens() -> None:
    spec = load_model_spec("rmt-tiny")
    kernels = armt_cell_kernels(spec, 64)
    assert not any(kernel.name.startswith("mem_") for kernel in kernels)
    assert total_flops(kernels) == total_flops(decoder_layer_kernels(spec, 64 + 2 * 8))


def test_full_attention_attends_causally_over_the_whole_sequence() -> None:
    spec = load_model_spec("armt-llama-1b")
    workload = full_attention_workload(spec, 131_072)
    attention = by_name(list(workload.cell_kernels(131_072)))["attention"]
    assert causal_pairs(131_072) == 131_072 * 131_073 // 2
    assert attention.flops == (4 * 2048 + 5 * 32) * causal_pairs(131_072)
    # flash-style: bytes grow linearly in N, never with the N x N scores
    assert attention.activation_bytes == 131_072 * (2048 + 1024 + 2048) * 2
    assert workload.state_bytes_per_layer == 2 * 131_072 * 512 * 2  # the KV cache


@pytest.mark.parametrize("hardware", available_hardware_specs())
@pytest.mark.parametrize("model", ["armt-tiny", "rmt-small", "armt-llama-1b"])
def test_width_one_step_costs_exactly_one_cell(model: str, hardware: str) -> None:
    spec = load_model_spec(model)
    cost = CostModel(workload_from_spec(spec), load_hardware_spec(hardware))
    for tokens in (1, spec.segment_len // 3, spec.segment_len):
        assert cost.step_time_s([tokens]) == cost.cell_time_s(tokens)


@SETTINGS
@given(
    width=st.integers(2, 32),
    tokens=st.lists(st.integers(1, 1024), min_size=1, max_size=3),
    hardware=st.sampled_from(available_hardware_specs()),
    model=st.sampled_from(["armt-tiny", "armt-llama-1b", "rmt-llama-160m"]),
)
def test_width_w_step_costs_less_than_w_cells(width: int, tokens: list[int], hardware: str, model: str) -> None:
    cost = CostModel(workload_from_spec(load_model_spec(model)), load_hardware_spec(hardware))
    cells = [tokens[i % len(tokens)] for i in range(width)]
    batched = cost.step_time_s(cells)
    assert batched < sum(cost.cell_time_s(t) for t in cells)
    assert batched >= max(cost.cell_time_s(t) for t in cells)  # adding cells never makes a step cheaper


def test_batched_step_pays_launches_and_ramps_once() -> None:
    cost = CostModel(synthetic_workload(4, per_token=3, fixed=5), unit_hardware(launch=7, half=11))
    # per cell of t tokens: mm (7 + 3t + 5 + 11) + vec (7 + t)
    assert cost.cell_time_s(10) == (7 + 30 + 5 + 11) + (7 + 10)
    # width 3 of 10, 10 and 4 tokens: one launch and one ramp per kernel, FLOPs summed
    assert cost.step_time_s([10, 10, 4]) == (7 + 3 * 24 + 3 * 5 + 11) + (7 + 24)


class PluginModel:
    """A plug-in that is no transformer: three kernels, one name repeated, and a list that depends on tokens."""

    num_layers = 3

    def cell_kernels(self, tokens: int) -> list[KernelWork]:
        kernels = [
            KernelWork("scan", 1000.0 * tokens, weight_bytes=4e6, activation_bytes=8.0 * tokens),
            KernelWork("scan", 10.0 * tokens, activation_bytes=1e5, matmul=False),
        ]
        if tokens > 100:
            kernels.append(KernelWork("chunk_fixup", 5e5, activation_bytes=1e3))
        return kernels


def test_a_plugin_kernel_list_is_costed_kernel_by_kernel() -> None:
    hardware = HardwareSpec(  # H100 peaks with fixed ramps, no host model and no waves: every term by hand
        name="h100-like", matmul_flops_per_s={"bf16": 989e12}, vector_flops_per_s=67e12,
        memory_bandwidth_bytes_per_s=3.35e12, memory_bytes=80e9, launch_overhead_s=5e-6, matmul_efficiency=0.7,
        matmul_half_flops=1e9, vector_efficiency=0.5, memory_efficiency=0.85, memory_half_bytes=2e6,
    )
    cost = CostModel(workload_from_model(PluginModel(), dtype_bytes=2), hardware)
    peak, bandwidth = 989e12 * 0.7, 3.35e12 * 0.85

    def roofline(flops: float, num_bytes: float, rate: float) -> float:
        return 5e-6 + max(flops / rate, (num_bytes + 2e6) / bandwidth)

    short = roofline(50 * 1000.0 + 1e9, 4e6 + 400.0, peak) + roofline(500.0, 1e5, 67e12 * 0.5)
    assert cost.cell_time_s(50) == pytest.approx(short, rel=1e-12)
    long = cost.cell_time_s(200)
    assert long == pytest.approx(
        roofline(200_000.0 + 1e9, 4e6 + 1600.0, peak) + roofline(2000.0, 1e5, 33.5e12) + roofline(5e5 + 1e9, 1e3, peak),
        rel=1e-12,
    )
    # a step mixing both lengths launches chunk_fixup once, for the one cell that has it
    mixed = cost.step_time_s([50, 200])
    assert mixed < short + long
    assert cost.layer_weight_bytes(50) == 4e6


def test_a_tied_head_is_the_embedding_table_once_on_a_device_holding_both_ends() -> None:
    from rmtsched.sim.memory import resident_bytes

    hardware = load_hardware_spec("h100-sxm")
    tied = load_model_spec("armt-llama-1b")
    untied = tied.replace(tie_word_embeddings=False)
    table = tied.vocab_size * tied.d_model * tied.dtype_bytes
    every_layer = range(tied.num_layers)
    one_device = {spec.tie_word_embeddings: resident_bytes(CostModel(workload_from_spec(spec), hardware),
                                                           every_layer, 1024) for spec in (tied, untied)}
    assert one_device[False] - one_device[True] == pytest.approx(table)
    last_stage = [resident_bytes(CostModel(workload_from_spec(spec), hardware), [tied.num_layers - 1], 1024)
                  for spec in (tied, untied)]
    assert last_stage[0] == last_stage[1]  # a pipeline's last device keeps its own copy of the head
