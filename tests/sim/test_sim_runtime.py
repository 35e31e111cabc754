"""The runtime-aware cost model: host/device overlap, eager vs graphs, wave quantisation, runtime profiles."""

from __future__ import annotations

import pytest
from sim_helpers import synthetic_workload, unit_hardware

from rmtsched.errors import SpecError
from rmtsched.sim import CostModel, workload_from_spec
from rmtsched.sim.cost import wave_utilization
from rmtsched.sim.workload import Workload
from rmtsched.specs.armt_cost import causal_block_pairs, causal_pairs, decoder_layer_kernels
from rmtsched.specs.cost import KernelWork
from rmtsched.specs.hardware import HardwareSpec, load_hardware_spec
from rmtsched.specs.model import load_model_spec


def test_a_step_takes_the_longer_of_host_and_device_time() -> None:
    # device, per cell of t tokens: mm (3t + 5) + vec (t), no launches; host: 2 kernels a step
    cost = CostModel(synthetic_workload(4, per_token=3, fixed=5), unit_hardware())
    host_bound = CostModel(cost.workload, cost.hardware.replace(host_overhead_s=100.0, host_cell_overhead_s=1.0,
                                                                host_step_overhead_s=7.0))
    assert host_bound.step_time_s([10]) == 7 + 2 * 100 + 1
    assert host_bound.step_time_s([10] * 3) == 7 + 2 * 100 + 3  # one launch per kernel, whatever the width
    assert host_bound.step_time_s([1000]) == cost.step_time_s([1000]) == 3 * 1000 + 5 + 1000  # device-bound


def test_row_looped_share_pays_one_host_op_per_extra_row() -> None:
    hardware = unit_hardware().replace(host_overhead_s=100.0, host_row_overhead_s=10.0, row_loop_fraction=0.5)
    cost = CostModel(synthetic_workload(4, per_token=3, fixed=5), hardware)
    assert cost.step_time_s([1]) == 200  # a lone cell loops nothing
    assert cost.step_time_s([1] * 5) == 200 + 0.5 * 2 * 4 * 10


def test_waves_fill_the_sms() -> None:
    assert wave_utilization(132, 132) == 1.0
    assert wave_utilization(133, 132) == pytest.approx(133 / 264)
    assert wave_utilization(1, 108) == pytest.approx(1 / 108)


def _gemm_workload(rows: int, cols: int, depth: int) -> Workload:
    def kernels(tokens: int) -> list[KernelWork]:
        return [KernelWork("gemm", 2.0 * rows * cols * depth, 2 * cols * depth, 2 * (rows * depth + rows * cols),
                           tiles=-(-rows // 128) * -(-cols // 128))]

    return Workload("gemm", 1, kernels)


def test_grouped_gemm_gain_is_small_at_large_shapes_and_large_at_small_ones() -> None:
    """The Diagonal Batching paper measured on an A100 (design notes section 4): 16 groups of 4096 x 2048 x 2048
    ran 0.94x-1.08x the speed of plain matmuls. Small GEMMs leave most SMs idle, which grouping fills."""
    a100 = load_hardware_spec("a100-80gb").with_runtime("graphs")
    large = CostModel(_gemm_workload(4096, 2048, 2048), a100)
    gain = 16 * large.step_device_s([1]) / large.step_device_s([1] * 16)
    assert 0.94 <= gain <= 1.15
    small = CostModel(_gemm_workload(256, 256, 256), a100)
    assert 16 * small.step_device_s([1]) / small.step_device_s([1] * 16) > 4


def test_eager_host_time_dominates_small_models_and_hides_behind_large_ones() -> None:
    eager = load_hardware_spec("h200")
    graphs = eager.with_runtime("graphs")
    small = workload_from_spec(load_model_spec("armt-small").replace(dtype_bytes=2))
    assert CostModel(small, eager).cell_time_s(64) > 10 * CostModel(small, graphs).cell_time_s(64)
    big = workload_from_spec(load_model_spec("armt-llama-8b").replace(segment_len=4096))
    ratio = CostModel(big, eager).step_time_s([4096] * 8) / CostModel(big, graphs).step_time_s([4096] * 8)
    assert 1.0 <= ratio < 1.05


def test_runtime_profiles_switch_and_are_checked() -> None:
    h100 = load_hardware_spec("h100-sxm")
    assert h100.runtime == "eager" and h100.host_overhead_s == 73e-6
    graphs = h100.with_runtime("graphs")
    assert graphs.runtime == "graphs" and graphs.host_overhead_s == 0 and graphs.launch_overhead_s < 4e-6
    assert HardwareSpec.from_dict(graphs.to_dict()) == graphs
    with pytest.raises(SpecError, match=r"no runtime 'jit'.*\['eager', 'graphs'\]"):
        h100.with_runtime("jit")
    with pytest.raises(SpecError, match="warp_speed"):
        h100.replace(runtime_profiles={"eager": {"warp_speed": 9.0}})
    with pytest.raises(SpecError, match="host_overhead_s must be a finite number >= 0, got -1"):
        h100.replace(host_overhead_s=-1)
    with pytest.raises(SpecError, match=r"row_loop_fraction must be in \[0, 1\], got 2"):
        h100.replace(row_loop_fraction=2)
    with pytest.raises(SpecError, match=r"sm_count must be an integer >= 0, got 1\.5"):
        h100.replace(sm_count=1.5)


@pytest.mark.parametrize("n", [1, 5, 127, 128, 129, 300, 1040])
def test_block_tiled_causal_attention_computes_whole_blocks(n: int) -> None:
    # brute force: query q runs over every key of the blocks up to and including its own 128-token block
    computed = sum(min(n, (q // 128 + 1) * 128) for q in range(n))
    assert causal_block_pairs(n) == computed >= causal_pairs(n)


def test_attention_runs_faster_per_flop_on_longer_sequences() -> None:
    """FlashAttention-2's published curves rise with sequence length; here from whole blocks and waves."""
    spec = load_model_spec("armt-llama-1b")
    cost = CostModel(workload_from_spec(spec), load_hardware_spec("a100-80gb"))

    def rate(n: int) -> float:
        attention = next(k for k in decoder_layer_kernels(spec, n) if k.name == "attention")
        seconds = cost.kernel_time_s(attention.flops, attention.activation_bytes, True, "attention",
                                     tiles=attention.tiles, useful_fraction=attention.useful_fraction)
        return attention.flops / seconds

    rates = [rate(n) for n in (512, 1152, 4096, 32768)]
    assert rates == sorted(rates) and rates[0] < 0.7 * rates[-1]
    assert rates[-1] == pytest.approx(0.6 * 312e12, rel=0.03)  # the FlashAttention-2 A100 figure at long length
    with pytest.raises(SpecError, match="useful_fraction must be in"):
        KernelWork("attention", 1.0, useful_fraction=0.0)


def test_an_eager_armt_cell_costs_its_kernel_list_in_host_launches() -> None:
    """A small ARMT cell on an eagerly driven H200 is host-bound: one step, 19 modelled kernels (4 memory-read,
    11 decoder-layer, 4 memory-write: design notes section 5), one cell, each at the preset's host price."""
    spec = load_model_spec("armt-small").replace(dtype_bytes=2)
    cost = CostModel(workload_from_spec(spec), load_hardware_spec("h200"))
    assert len(cost.kernels(64)) == 19
    assert cost.cell_time_s(64) == pytest.approx(20e-6 + 19 * 73e-6 + 10e-6, rel=1e-12)
    assert cost.step_time_s([64] * 16) == pytest.approx(20e-6 + 19 * 73e-6 + 16 * 10e-6, rel=1e-12)
