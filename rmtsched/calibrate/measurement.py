"""A timed call of backend code, described in the simulator's own terms so the simulator can predict it.

A ``Measurement`` pairs a wall time with the ``KernelWork`` list of ONE row of the call (one cell, or one
layer's GEMM) and the call's width: the prediction is exactly what ``rmtsched.sim.CostModel`` charges a
step of that many such cells, so fitting a ``HardwareSpec`` to measurements fits the simulator itself,
whatever its cost formula is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rmtsched.sim.cost import CostModel
from rmtsched.sim.workload import Workload
from rmtsched.specs.cost import KernelWork
from rmtsched.specs.hardware import HardwareSpec

# Measurement groups timed through the executor (a whole step or schedule run).
EXECUTOR_GROUPS = ("step", "run")


@dataclass(frozen=True)
class _Kernels:
    """A picklable ``cell_kernels`` that returns the same kernels whatever the token count."""

    kernels: tuple[KernelWork, ...]

    def __call__(self, tokens: int) -> list[KernelWork]:
        return list(self.kernels)


@dataclass(frozen=True)
class Measurement:
    """``measured_s`` for a call of ``width`` rows, each doing ``kernels``, over ``layers`` distinct layers.

    ``group`` says which fitting stage uses it ("kernel", "step", "run", ...); ``layers`` (default:
    ``width``) counts the distinct weight sets the call reads, as the cost model reads weights once per
    layer. A whole schedule run on one device gives ``steps``: (width, count) pairs, each a step of that
    many cells on as many layers, ``count`` times; its prediction is the sum (``width`` is then the widest).
    Only calls through the executor (groups in ``EXECUTOR_GROUPS``) pay the spec's per-cell overhead and
    its lone-cell slowdown.
    """

    name: str
    group: str
    kernels: tuple[KernelWork, ...]
    width: int
    measured_s: float
    dtype_bytes: int = 4
    layers: int | None = None
    steps: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ValueError(f"measurement {self.name!r}: width must be positive, got {self.width}")
        if self.steps is not None and (not self.steps or min(min(pair) for pair in self.steps) <= 0):
            raise ValueError(f"measurement {self.name!r}: steps must be (width, count) pairs >= 1, got {self.steps}")
        if not self.kernels:
            raise ValueError(f"measurement {self.name!r} has no kernels")
        if not (self.measured_s > 0 and math.isfinite(self.measured_s)):
            raise ValueError(
                f"measurement {self.name!r}: measured_s must be positive and finite, got {self.measured_s}"
            )

    def predict_s(self, hardware: HardwareSpec) -> float:
        """The simulator's time for this call on ``hardware`` (a step of ``width`` identical cells, or the
        sum of ``steps``)."""
        if self.group not in EXECUTOR_GROUPS and (hardware.cell_overhead_s or hardware.lone_cell_slowdown != 1.0):
            # A bare kernel call has no executor around it, and its benchmark loop keeps the threads busy.
            hardware = hardware.replace(cell_overhead_s=0.0, lone_cell_slowdown=1.0)
        workload = Workload(self.name, self.width, _Kernels(self.kernels), self.dtype_bytes)
        cost = CostModel(workload, hardware)
        if self.steps is None:
            return cost.step_time_s([1] * self.width, self.layers or self.width)
        return sum(count * cost.step_time_s([1] * width, width) for width, count in self.steps)

    @property
    def cells(self) -> int:
        """Cells (rows) the measured call ran."""
        return self.width if self.steps is None else sum(width * count for width, count in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "width": self.width,
            "layers": self.layers or self.width,
            "measured_s": self.measured_s,
            "flops": sum(k.flops for k in self.kernels) * self.cells,
            "kernels": [k.name for k in self.kernels],
        }


__all__ = ["EXECUTOR_GROUPS", "Measurement"]
