"""The cost model: time of a kernel, a cell and a batched step on one device, and a step's memory.

A step takes ``max(host, device)``: the host issues kernels asynchronously (eager PyTorch from Python,
or one graph launch), the device runs them. On a device, a kernel takes ``launch + max(compute, memory)``
with the saturating efficiency of ``HardwareSpec`` (and wave quantisation where the spec knows its SMs).
A step of width w runs every kernel once for all its cells: FLOPs and activation bytes add up over the
cells, each distinct layer's weights are read once, and the launch and efficiency ramp are paid once,
so ``step([c]) == cell(c)`` and ``step(w cells) < w * cell`` whenever launches or ramps cost anything.
A step of a single cell may also run its kernels' work slower (``HardwareSpec.lone_cell_slowdown``): on a
multi-core CPU one cell's small ops leave intra-op threads idle, which a step of several cells fills.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from rmtsched.errors import ScheduleError
from rmtsched.sched import Cell
from rmtsched.sim.workload import Workload
from rmtsched.specs.cost import KernelWork
from rmtsched.specs.hardware import HardwareSpec


def wave_utilization(tiles: int, sm_count: int) -> float:
    """Share of ``ceil(tiles / sm_count)`` full waves that ``tiles`` blocks of work fill (1 when they divide)."""
    waves = -(-tiles // sm_count)
    return tiles / (waves * sm_count)


class StepProfile(NamedTuple):
    """One step as the engines need it: its time and how it changes its device's memory.

    ``running_bytes`` is held while the step runs (each cell's largest kernel working set, plus the
    embeddings of layer-0 cells); ``consumed_bytes`` are input hidden states freed when it ends;
    ``produced_bytes`` are output hidden states allocated when it ends (none for the last layer).
    """

    duration_s: float
    running_bytes: float
    consumed_bytes: float
    produced_bytes: float


# (tokens, is_layer_0, is_last_layer) of each cell in a step, sorted; plus the number of distinct layers.
StepKey = tuple[tuple[tuple[int, bool, bool], ...], int]


class CostModel:
    """Costs cells and steps of ``workload`` on ``hardware``; results are cached per distinct shape."""

    def __init__(self, workload: Workload, hardware: HardwareSpec):
        self.workload = workload
        self.hardware = hardware
        self._matmul_peak = hardware.matmul_peak_flops_per_s(workload.dtype_bytes)
        self._kernels: dict[int, list[tuple[tuple[str, int], KernelWork]]] = {}
        self._steps: dict[StepKey, StepProfile] = {}

    def require_layers(self, num_layers: int) -> None:
        """Refuse (``ScheduleError``) a cell graph whose depth is not the workload's."""
        if num_layers != self.workload.num_layers:
            raise ScheduleError(
                f"graph has {num_layers} layers but the workload {self.workload.name!r} has {self.workload.num_layers}"
            )

    # -- kernels ---------------------------------------------------------------------------------
    def kernel_time_s(
        self,
        flops: float,
        num_bytes: float,
        matmul: bool,
        name: str | None = None,
        lone: bool = False,
        tiles: int = 0,
        useful_fraction: float = 1.0,
    ) -> float:
        """Roofline with efficiency ramps: launch + max((F + F_half) / (eta peak), (B + B_half) / (eta BW)).

        A kernel ``name`` listed in the hardware's ``kernel_efficiency`` runs its compute at that multiple
        of the rate, and one in ``kernel_launch_overhead_s`` pays that launch instead of the default one.
        ``lone``: the kernel runs in a step of one cell, whose work (not launch) takes the hardware's
        ``lone_cell_slowdown`` times as long. ``tiles``: the kernel's blocks of parallel work, which on a
        hardware with ``sm_count`` (a tiled GPU) run in whole waves (compute divided by the filled share of
        the waves); there the kernel also executes ``flops / useful_fraction`` (whole attention blocks).
        """
        hw = self.hardware
        filled = wave_utilization(tiles, hw.sm_count) if tiles and hw.sm_count else 1.0
        if hw.sm_count:
            flops /= useful_fraction
        if matmul:
            compute = (flops / filled + hw.matmul_half_flops) / (hw.matmul_efficiency * self._matmul_peak)
        else:
            compute = flops / filled / (hw.vector_efficiency * hw.vector_flops_per_s)
        launch = hw.launch_overhead_s
        if name is not None:
            compute /= hw.kernel_efficiency.get(name, 1.0)
            launch = hw.kernel_launch_overhead_s.get(name, launch)
        memory = (num_bytes + hw.memory_half_bytes) / (hw.memory_efficiency * hw.memory_bandwidth_bytes_per_s)
        body = max(compute, memory)
        return launch + (body * hw.lone_cell_slowdown if lone else body)

    def kernels(self, tokens: int) -> list[tuple[tuple[str, int], KernelWork]]:
        """The cell's kernels keyed by (name, occurrence), so cells of different lengths line up."""
        if tokens not in self._kernels:
            seen: dict[str, int] = {}
            keyed = []
            for kernel in self.workload.cell_kernels(tokens):
                seen[kernel.name] = seen.get(kernel.name, -1) + 1
                keyed.append(((kernel.name, seen[kernel.name]), kernel))
            self._kernels[tokens] = keyed
        return self._kernels[tokens]

    # -- cells and steps -------------------------------------------------------------------------
    def cell_time_s(self, tokens: int) -> float:
        """One cell alone: a step of width 1 (every kernel launched once, its layer's weights read once)."""
        return self.step_time_s([tokens])

    def step_time_s(self, cell_tokens: Sequence[int], num_layers: int | None = None) -> float:
        """A batched step: ``max(host, device)`` (``step_host_s``, ``step_device_s``); see the module docstring."""
        return max(self.step_host_s(cell_tokens), self.step_device_s(cell_tokens, num_layers))

    def step_host_s(self, cell_tokens: Sequence[int]) -> float:
        """Host time to issue a step: per step, per kernel launched (per cell for row-looped kernels), per
        cell, and per extra launch of the share of kernels the backend loops over rows."""
        hw = self.hardware
        width = len(cell_tokens)
        row_looped = hw.per_row_kernels
        batched = per_row = 0
        for _, kernel in self.kernels(max(cell_tokens)):
            if kernel.per_row or kernel.name in row_looped:
                per_row += 1
            else:
                batched += 1
        launches = batched + width * per_row
        extra_rows = hw.row_loop_fraction * batched * (width - 1)
        return (
            hw.host_step_overhead_s + launches * hw.host_overhead_s + width * hw.host_cell_overhead_s
            + extra_rows * hw.host_row_overhead_s
        )

    def step_device_s(self, cell_tokens: Sequence[int], num_layers: int | None = None) -> float:
        """Device time of a batched step over cells of ``cell_tokens`` tokens touching ``num_layers`` distinct
        layers (default: one per cell): one launch per kernel, FLOPs, activations and tiles summed, weights
        per layer. A ``per_row`` kernel (or one the hardware lists in ``per_row_kernels``: the backend loops
        over rows for it there) instead costs what it costs in each cell alone, summed over the cells, and
        every cell pays the hardware's ``cell_overhead_s``; the row-looped share of the other kernels
        (``row_loop_fraction``) pays one more launch per extra cell."""
        hw = self.hardware
        distinct = len(cell_tokens) if num_layers is None else num_layers
        lone = len(cell_tokens) == 1
        row_looped = hw.per_row_kernels
        per_row_s = len(cell_tokens) * hw.cell_overhead_s
        flops: dict[tuple[str, int], float] = {}
        activations: dict[tuple[str, int], float] = {}
        weights: dict[tuple[str, int], float] = {}
        matmul: dict[tuple[str, int], bool] = {}
        tiles: dict[tuple[str, int], int] = {}
        executed: dict[tuple[str, int], float] = {}
        for tokens in cell_tokens:
            for key, kernel in self.kernels(tokens):
                if kernel.per_row or kernel.name in row_looped:
                    per_row_s += self.kernel_time_s(
                        kernel.flops, kernel.weight_bytes + kernel.activation_bytes, kernel.matmul, kernel.name, lone,
                        kernel.tiles, kernel.useful_fraction,
                    )
                    continue
                # executed work where tiles waste some (``kernel_time_s`` divides by the useful fraction)
                executed[key] = executed.get(key, 0.0) + kernel.flops / kernel.useful_fraction
                flops[key] = flops.get(key, 0.0) + kernel.flops
                activations[key] = activations.get(key, 0.0) + kernel.activation_bytes
                weights[key] = max(weights.get(key, 0.0), kernel.weight_bytes)
                matmul[key] = kernel.matmul
                tiles[key] = tiles.get(key, 0) + kernel.tiles
        extra_launches = hw.row_loop_fraction * len(flops) * (len(cell_tokens) - 1) * hw.launch_overhead_s
        return per_row_s + extra_launches + sum(
            self.kernel_time_s(
                flops[key], activations[key] + distinct * weights[key], matmul[key], key[0], lone, tiles[key],
                flops[key] / executed[key] if executed[key] else 1.0,
            )
            for key in flops
        )

    def working_set_bytes(self, tokens: int) -> float:
        """Activation memory a running cell needs: its largest kernel's inputs and outputs."""
        return max((float(k.activation_bytes) for _, k in self.kernels(tokens)), default=0.0)

    def layer_weight_bytes(self, tokens: int) -> float:
        """Parameters of one layer (the weights its kernels read)."""
        return float(sum(k.weight_bytes for _, k in self.kernels(tokens)))

    def step_profile(self, cells: Iterable[Cell], segment_tokens: Sequence[int]) -> StepProfile:
        """Time and memory effect of one step of ``cells`` (cached by the multiset of cell shapes)."""
        last = self.workload.num_layers - 1
        shapes = []
        layers = set()
        for layer, segment in cells:
            shapes.append((segment_tokens[segment], layer == 0, layer == last))
            layers.add(layer)
        key: StepKey = (tuple(sorted(shapes)), len(layers))
        profile = self._steps.get(key)
        if profile is None:
            profile = self._profile(*key)
            self._steps[key] = profile
        return profile

    def _profile(self, shapes: tuple[tuple[int, bool, bool], ...], num_layers: int) -> StepProfile:
        hidden = self.workload.hidden_bytes
        running = sum(self.working_set_bytes(t) + (hidden(t) if first else 0.0) for t, first, _ in shapes)
        consumed = sum(hidden(t) for t, first, _ in shapes if not first)
        produced = sum(hidden(t) for t, _, last in shapes if not last)
        duration = self.step_time_s([t for t, _, _ in shapes], num_layers)
        return StepProfile(duration, running, consumed, produced)


__all__ = ["CostModel", "StepProfile", "wave_utilization"]
