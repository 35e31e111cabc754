"""Synthetic workloads and hardware for simulator tests: integer costs, so every sum is exact."""

from __future__ import annotations

import math
import random

from rmtsched.sched import Cell, CellGraph, Schedule, Step, Transfer
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


def random_schedule(graph: CellGraph, rng: random.Random, num_devices: int) -> Schedule:
    """A random valid schedule: random batches of ready cells on random devices, a transfer per crossing edge."""
    remaining = {cell: len(graph.predecessors(cell)) for cell in graph.cells()}
    ready = [cell for cell, count in remaining.items() if count == 0]
    steps, device_of = [], {}
    while ready:
        rng.shuffle(ready)
        width = rng.randint(1, len(ready))
        batch, ready = ready[:width], ready[width:]
        device = rng.randrange(num_devices)
        steps.append(Step(tuple(batch), device))
        for cell in batch:
            device_of[cell] = device
            for succ in graph.successors(cell):
                remaining[succ] -= 1
                if remaining[succ] == 0:
                    ready.append(succ)
    transfers = dict.fromkeys(
        Transfer(source, device_of[source], device_of[target])
        for source, target in graph.edges()
        if device_of[source] != device_of[target]
    )
    return Schedule(tuple(steps), tuple(transfers), "random", num_devices)


def random_dag(layers: int, segments: int, rng: random.Random) -> CellGraph:
    """A user-defined DAG: forward edges over a shuffled order of the cells."""
    order = [Cell(layer, segment) for segment in range(segments) for layer in range(layers)]
    rng.shuffle(order)
    preds: dict[Cell, list[Cell]] = {}
    for position, target in enumerate(order[1:], start=1):
        preds[target] = rng.sample(order[:position], min(position, rng.choice((0, 1, 2, 3))))
    return CellGraph(layers, (4,) * segments, lambda cell, num_layers, num_segments: preds.get(cell, []))
