"""The training schedule IR: an ordered list of one-phase steps (forward, recompute or backward cells).

A step runs cells of one phase together on one device (one batched call per weight, as a forward step
does). Cells that have an R step are recomputed: their forward activations are dropped after F and rebuilt
by R before B. A cell's F, R and B run on one device (its activations live there); an edge between devices
needs a transfer of the producer's output (hidden states and memory forward, their gradients backward).
Plain, immutable data with a JSON form, like ``Schedule``; ``validate_train`` checks it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from rmtsched.errors import ScheduleError
from rmtsched.sched.dag import Cell
from rmtsched.sched.schedule import _parse_cell, _parse_int, _parse_json, _parse_list
from rmtsched.sched.train_dag import Phase, TrainCell


@dataclass(frozen=True, slots=True)
class TrainStep:
    """Cells of one phase that run together in one batched call on ``device``."""

    phase: Phase
    cells: tuple[Cell, ...]
    device: int = 0

    @property
    def width(self) -> int:
        return len(self.cells)

    def nodes(self) -> Iterator[TrainCell]:
        for cell in self.cells:
            yield TrainCell(self.phase, *cell)


@dataclass(frozen=True, slots=True)
class TrainTransfer:
    """The output of ``node`` (an F cell's hidden states and memory, or a B cell's gradients) moves from
    ``src_device`` to ``dst_device``, after ``node`` ran and before its consumer there starts."""

    node: TrainCell
    src_device: int
    dst_device: int


@dataclass(frozen=True)
class TrainSchedule:
    """Forward, recompute and backward steps in a valid global issue order across ``num_devices`` devices."""

    steps: tuple[TrainStep, ...]
    scheduler: str = "custom"
    options: Mapping[str, Any] = field(default_factory=dict)
    transfers: tuple[TrainTransfer, ...] = ()
    num_devices: int = 1

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def max_width(self) -> int:
        return max((step.width for step in self.steps), default=0)

    @property
    def recomputed(self) -> frozenset[Cell]:
        """The cells whose activations are rebuilt by an R step instead of kept from F."""
        return frozenset(cell for step in self.steps if step.phase is Phase.RECOMPUTE for cell in step.cells)

    def held_activations(self) -> list[int]:
        """Cells whose forward activations are held after each step (kept from F or rebuilt by R, until B).

        A B step still reads what its cells hold, so they count during that step and are freed after it.
        """
        recomputed = self.recomputed
        held, counts = 0, []
        for step in self.steps:
            if step.phase is Phase.BACKWARD:
                counts.append(held)
                held -= step.width
                continue
            held += sum(1 for cell in step.cells if step.phase is Phase.RECOMPUTE or cell not in recomputed)
            counts.append(held)
        return counts

    def phase_steps(self, phase: Phase) -> list[tuple[int, TrainStep]]:
        """``(step index, step)`` for the steps of ``phase``, in order."""
        return [(index, step) for index, step in enumerate(self.steps) if step.phase is phase]

    # -- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "train",
            "scheduler": self.scheduler,
            "num_devices": self.num_devices,
            "num_steps": self.num_steps,
            "options": dict(self.options),
            "steps": [
                {"phase": step.phase.value, "cells": [[cell.layer, cell.segment] for cell in step.cells],
                 "device": step.device}
                for step in self.steps
            ],
            "transfers": [
                {"phase": t.node.phase.value, "cell": [t.node.layer, t.node.segment], "src": t.src_device,
                 "dst": t.dst_device}
                for t in self.transfers
            ],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainSchedule:
        """Parse a training schedule; every malformed field raises ``ScheduleError`` naming it."""
        if not isinstance(data, Mapping) or "steps" not in data:
            raise ScheduleError("a training schedule must be a JSON object with a 'steps' list")
        if data.get("kind", "train") != "train":
            raise ScheduleError(f"kind: expected 'train' for a training schedule, got {data['kind']!r}")
        steps = tuple(_parse_step(raw, f"steps[{i}]") for i, raw in enumerate(_parse_list(data["steps"], "steps")))
        options = data.get("options", {})
        if not isinstance(options, Mapping):
            raise ScheduleError(f"options: expected a JSON object, got {options!r}")
        transfers = tuple(
            _parse_transfer(raw, f"transfers[{i}]")
            for i, raw in enumerate(_parse_list(data.get("transfers", []), "transfers"))
        )
        default_devices = 1 + max((step.device for step in steps), default=0)
        num_devices = _parse_int(data.get("num_devices", default_devices), "num_devices")
        return cls(steps, str(data.get("scheduler", "custom")), dict(options), transfers, num_devices)

    @classmethod
    def from_json(cls, text: str) -> TrainSchedule:
        return cls.from_dict(_parse_json(text, "training schedule"))


def _parse_phase(raw: Any, where: str) -> Phase:
    try:
        return Phase(raw)
    except ValueError:
        expected = [phase.value for phase in Phase]
        raise ScheduleError(f"{where}: expected one of {expected}, got {raw!r}") from None


def _parse_step(raw: Any, where: str) -> TrainStep:
    if not isinstance(raw, Mapping) or not {"phase", "cells"} <= raw.keys():
        raise ScheduleError(f"{where}: expected an object with 'phase' and 'cells', got {raw!r}")
    phase = _parse_phase(raw["phase"], f"{where}.phase")
    cells = tuple(_parse_cell(cell, f"{where}.cells") for cell in _parse_list(raw["cells"], f"{where}.cells"))
    return TrainStep(phase, cells, _parse_int(raw.get("device", 0), f"{where}.device"))


def _parse_transfer(raw: Any, where: str) -> TrainTransfer:
    if not isinstance(raw, Mapping) or not {"phase", "cell", "src", "dst"} <= raw.keys():
        raise ScheduleError(f"{where}: expected an object with 'phase', 'cell', 'src' and 'dst', got {raw!r}")
    cell = _parse_cell(raw["cell"], f"{where}.cell")
    node = TrainCell(_parse_phase(raw["phase"], f"{where}.phase"), *cell)
    return TrainTransfer(node, _parse_int(raw["src"], f"{where}.src"), _parse_int(raw["dst"], f"{where}.dst"))


__all__ = ["TrainSchedule", "TrainStep", "TrainTransfer"]
