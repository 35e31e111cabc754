"""Synthetic workloads and hardware for simulator tests: integer costs, so every sum is exact."""

from __future__ import annotations

import math
import random

from random_dags import predecessor_rule, shuffled_forward_edges

from rmtsched.sched import CellGraph
from rmtsched.sim.workload import Workload
from rmtsched.specs.cost import KernelWork
from rmtsched.specs.hardware import HardwareSpec


def unit_hardware(launch: int = 0, half: int = 0, latency: int = 0, link_free: bool = False) -> HardwareSpec:
    """Peak 1 FLOP/s everywhere and unlimited memory bandwidth: a kernel of F FLOPs takes F (+ ramps) seconds."""
    return HardwareSpec(
        name="unit",
        matmul_flops_per_s={"fp32": 1.0},
        vector_flops_per_s=1.0,
        memory_bandwidth_bytes_per_s=1e30,
        memory_bytes=1e30,
        launch_overhead_s=float(launch),
        num_devices=64,
        link_bandwidth_bytes_per_s=math.inf if link_free else 1.0,
        link_latency_s=0.0 if link_free else float(latency),
        matmul_half_flops=float(half),
    )


def synthetic_workload(layers: int, per_token: int, fixed: int, hidden_per_token: int = 3) -> Workload:
    """Two kernels per cell (a matmul of per_token * t + fixed FLOPs and a t-FLOP vector op)."""

    def kernels(tokens: int) -> list[KernelWork]:
        return [
            KernelWork("mm", per_token * tokens + fixed, weight_bytes=100, activation_bytes=5 * tokens),
            KernelWork("vec", tokens, activation_bytes=2 * tokens, matmul=False),
        ]

    return Workload(
        name="synthetic",
        num_layers=layers,
        cell_kernels=kernels,
        dtype_bytes=4,
        hidden_bytes=lambda tokens: float(hidden_per_token * tokens),
        state_bytes_per_layer=7.0,
        first_device_bytes=11.0,
        last_device_bytes=13.0,
    )


def random_dag(layers: int, segments: int, rng: random.Random) -> CellGraph:
    """A user-defined DAG of 4-token segments: forward edges over a shuffled order, 0-3 predecessors a cell."""
    edges = shuffled_forward_edges(layers, segments, rng, fan_ins=(0, 1, 2, 3))
    return CellGraph(layers, (4,) * segments, predecessor_rule(edges))
