"""Cost of a training schedule: step times, activation memory over time and its peak, on each device.

A forward or recompute step costs what the forward step of the same cells costs (``CostModel.step_profile``),
plus the segment loss (LM head and cross-entropy, ``Workload.loss_kernels``) of each last-layer cell;
a backward step costs ``backward_factor`` times that (about 2: the gradients of the inputs and of the
weights are each a product the size of the forward one). A device runs its steps in schedule order, each
as soon as the device is free and its predecessors are done; a predecessor on another device adds a link
transfer of one cell's hidden states (``link_latency_s`` + bytes / ``link_bandwidth_bytes_per_s``; links
are not contended). Memory per device is the resident part of its layers (weights, their gradients,
recurrent states, embeddings and head) plus the activations held for the backward: a stored cell holds
``saved_bytes`` from its F to its B; a recomputed cell holds only its checkpoint (input hidden states and
incoming memory state) until R rebuilds the rest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from rmtsched.errors import ScheduleError
from rmtsched.sched import Cell, Phase, TrainGraph, TrainSchedule, validate_train
from rmtsched.sim.cost import CostModel
from rmtsched.sim.memory import resident_bytes
from rmtsched.specs.cost import KernelWork

BACKWARD_FACTOR = 2.0


@dataclass(frozen=True)
class TrainSimResult:
    """Per-step times and held activation bytes (indexed like ``schedule.steps``) and their summary."""

    scheduler: str
    step_start_s: np.ndarray
    step_end_s: np.ndarray
    step_devices: np.ndarray
    held_bytes: np.ndarray  # activation bytes held on the step's device while it runs, its working set included
    resident_bytes: tuple[float, ...]  # per device
    phase_s: dict[str, float]  # total time of the F, R and B steps, summed over devices

    @property
    def makespan_s(self) -> float:
        return float(self.step_end_s.max(initial=0.0))

    @property
    def peak_activation_bytes(self) -> float:
        """The most activation bytes any device holds at once (its running step's working set included)."""
        return float(self.held_bytes.max(initial=0.0))

    @property
    def device_peak_memory_bytes(self) -> tuple[float, ...]:
        return tuple(
            resident + float(self.held_bytes[self.step_devices == device].max(initial=0.0))
            for device, resident in enumerate(self.resident_bytes)
        )

    @property
    def peak_memory_bytes(self) -> float:
        """The busiest device's peak."""
        return max(self.device_peak_memory_bytes)

    def to_dict(self) -> dict[str, object]:
        return {
            "schedule": self.scheduler,
            "steps": len(self.step_end_s),
            "makespan_s": self.makespan_s,
            "forward_s": self.phase_s[Phase.FORWARD.value],
            "recompute_s": self.phase_s[Phase.RECOMPUTE.value],
            "backward_s": self.phase_s[Phase.BACKWARD.value],
            "devices": len(self.resident_bytes),
            "resident_bytes_per_device": list(self.resident_bytes),
            "peak_activation_bytes": self.peak_activation_bytes,
            "peak_memory_bytes_per_device": list(self.device_peak_memory_bytes),
            "peak_memory_bytes": self.peak_memory_bytes,
        }


def saved_bytes(cost: CostModel, tokens: int) -> float:
    """Activations one cell keeps for its backward: every intermediate its kernels produce, once."""
    return _intermediate_bytes(kernel for _, kernel in cost.kernels(tokens))


def _intermediate_bytes(kernels: Iterable[KernelWork]) -> float:
    """Each kernel's ``activation_bytes`` counts its inputs and outputs; an intermediate is the output of one
    kernel and the input of the next, so half the sum counts each once (an estimate: autograd keeps most,
    not all, of them)."""
    return 0.5 * sum(kernel.activation_bytes for kernel in kernels)


def loss_s(cost: CostModel, tokens: int) -> float:
    """A segment's loss (LM head and cross-entropy on its ``tokens`` outputs), run by its last-layer cell in
    F and R (and ``backward_factor`` times that in B); 0 for a workload without ``loss_kernels``."""
    kernels = cost.workload.loss_kernels
    if kernels is None:
        return 0.0
    return sum(cost.kernel_time_s(k.flops, k.weight_bytes + k.activation_bytes, k.matmul, k.name, tiles=k.tiles)
               for k in kernels(tokens))


def loss_saved_bytes(cost: CostModel, tokens: int) -> float:
    """What a segment's loss keeps for its backward, counted like ``saved_bytes`` (logits, log-probabilities)."""
    kernels = cost.workload.loss_kernels
    return 0.0 if kernels is None else _intermediate_bytes(kernels(tokens))


def checkpoint_bytes(cost: CostModel, tokens: int) -> float:
    """What a recomputed cell keeps from F to R: its input hidden states and its layer's incoming state."""
    return cost.workload.hidden_bytes(tokens) + cost.workload.state_bytes_per_layer


def simulate_train(
    schedule: TrainSchedule,
    graph: TrainGraph,
    cost: CostModel,
    *,
    backward_factor: float = BACKWARD_FACTOR,
    check: bool = True,
) -> TrainSimResult:
    """Time and memory of ``schedule`` (validated first unless ``check`` is False) under ``cost``."""
    if check:
        validate_train(schedule, graph)
    cost.require_layers(graph.num_layers)
    if not (math.isfinite(backward_factor) and backward_factor > 0):
        raise ScheduleError(f"backward_factor must be positive, got {backward_factor!r} (expected a finite number > 0)")
    tokens = graph.forward.segment_tokens
    loss_of = {count: loss_s(cost, count) for count in set(tokens)}
    recomputed = schedule.recomputed
    durations, held_during = [], []
    phase_s = {phase.value: 0.0 for phase in Phase}
    held = [0.0] * schedule.num_devices
    last = graph.num_layers - 1
    for step in schedule.steps:
        profile = cost.step_profile(step.cells, tokens)
        work = profile.duration_s + sum(loss_of[tokens[cell.segment]] for cell in step.cells if cell.layer == last)
        duration = work * (backward_factor if step.phase is Phase.BACKWARD else 1.0)
        keeps = sum(_kept_bytes(cost, step.phase, cell, tokens, cell in recomputed) for cell in step.cells)
        # A forward or recompute step holds its outputs and working set; a backward step frees its cells'.
        held_during.append(held[step.device] + max(keeps, 0.0) + profile.running_bytes)
        held[step.device] += keeps
        durations.append(duration)
        phase_s[step.phase.value] += duration
    starts, ends = _timeline(schedule, graph, cost, durations)
    devices = np.array([step.device for step in schedule.steps], dtype=np.int64)
    resident = _resident(cost, schedule, max(tokens))
    return TrainSimResult(schedule.scheduler, starts, ends, devices, np.array(held_during), resident, phase_s)


def _timeline(
    schedule: TrainSchedule, graph: TrainGraph, cost: CostModel, durations: list[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of every step: its device free, its predecessors done and, across devices, arrived."""
    hardware, tokens = cost.hardware, graph.forward.segment_tokens
    step_of = {node: index for index, step in enumerate(schedule.steps) for node in step.nodes()}
    recomputed = schedule.recomputed
    free = [0.0] * schedule.num_devices
    starts, ends = np.zeros(len(durations)), np.zeros(len(durations))
    for index, step in enumerate(schedule.steps):
        start = free[step.device]
        for node in step.nodes():
            for pred in graph.predecessors(node, recomputed=node.cell in recomputed):
                producer = step_of[pred]
                arrival = ends[producer]
                if schedule.steps[producer].device != step.device:
                    size = cost.workload.hidden_bytes(tokens[pred.segment])
                    arrival += hardware.link_latency_s + size / hardware.link_bandwidth_bytes_per_s
                start = max(start, arrival)
        starts[index], ends[index] = start, start + durations[index]
        free[step.device] = ends[index]
    return starts, ends


def _kept_bytes(cost: CostModel, phase: Phase, cell: Cell, segment_tokens: tuple[int, ...], recomputed: bool) -> float:
    """How a step changes the bytes held for ``cell``: + on F and R, - (all of it) on B."""
    tokens = segment_tokens[cell.segment]
    full, checkpoint = saved_bytes(cost, tokens), checkpoint_bytes(cost, tokens)
    if cell.layer == cost.workload.num_layers - 1:
        full += loss_saved_bytes(cost, tokens)
    if phase is Phase.FORWARD:
        return checkpoint if recomputed else full
    if phase is Phase.RECOMPUTE:
        return full
    return -(full + checkpoint) if recomputed else -full


def _resident(cost: CostModel, schedule: TrainSchedule, max_tokens: int) -> tuple[float, ...]:
    """Per device: weights, states, embeddings and head of its layers (as for inference) plus one gradient
    per layer weight."""
    layers: list[set[int]] = [set() for _ in range(schedule.num_devices)]
    for step in schedule.steps:
        layers[step.device].update(cell.layer for cell in step.cells)
    gradient = cost.layer_weight_bytes(max_tokens)
    return tuple(resident_bytes(cost, held, max_tokens) + gradient * len(held) for held in layers)


__all__ = [
    "BACKWARD_FACTOR",
    "TrainSimResult",
    "checkpoint_bytes",
    "loss_s",
    "loss_saved_bytes",
    "saved_bytes",
    "simulate_train",
]
