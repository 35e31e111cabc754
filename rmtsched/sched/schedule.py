"""The schedule IR: an ordered list of steps (cells run together on one device) plus transfers.

A schedule is plain, immutable data. The simulator and the executors are two interpreters of it;
JSON is its exchange format, so a person can hand-write one and ``validate`` it against a graph.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rmtsched.errors import ScheduleError
from rmtsched.sched.dag import Cell


@dataclass(frozen=True, slots=True)
class Step:
    """Cells that run together in one batched call on ``device``."""

    cells: tuple[Cell, ...]
    device: int = 0

    @property
    def width(self) -> int:
        return len(self.cells)


@dataclass(frozen=True, slots=True)
class Transfer:
    """The output of ``cell`` (its segment's hidden states) moves from ``src_device`` to ``dst_device``.

    A multi-device schedule needs one for every edge whose endpoints run on different devices; it can
    start once ``cell`` has run and must finish before the consumer starts.
    """

    cell: Cell
    src_device: int
    dst_device: int


@dataclass(frozen=True)
class SchedulerOptions:
    """Options every scheduler receives; each uses the ones that apply and refuses ones it cannot honour.

    ``layer_costs`` (relative cost of one cell of each layer) lets a pipelined scheduler balance stages.
    """

    max_width: int | None = None
    num_devices: int = 1
    layer_costs: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.max_width is not None and (not isinstance(self.max_width, int) or self.max_width <= 0):
            raise ScheduleError(f"max_width must be a positive integer or None, got {self.max_width!r}")
        if not isinstance(self.num_devices, int) or self.num_devices <= 0:
            raise ScheduleError(f"number of devices must be a positive integer, got {self.num_devices!r}")
        if self.layer_costs is not None and any(cost <= 0 for cost in self.layer_costs):
            raise ScheduleError(f"layer_costs must all be positive, got {self.layer_costs!r}")


@dataclass(frozen=True)
class Schedule:
    """An ordered list of steps; the order is a valid global order of issue across devices."""

    steps: tuple[Step, ...]
    transfers: tuple[Transfer, ...] = ()
    scheduler: str = "custom"
    num_devices: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def num_cells(self) -> int:
        return sum(step.width for step in self.steps)

    @property
    def max_width(self) -> int:
        return max((step.width for step in self.steps), default=0)

    def cells(self) -> Iterable[Cell]:
        for step in self.steps:
            yield from step.cells

    # -- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "scheduler": self.scheduler,
            "num_devices": self.num_devices,
            "num_steps": self.num_steps,
            "options": dict(self.options),
            "steps": [[[cell.layer, cell.segment] for cell in step.cells] for step in self.steps],
            "step_devices": [step.device for step in self.steps],
            "transfers": [
                {"cell": [t.cell.layer, t.cell.segment], "src": t.src_device, "dst": t.dst_device}
                for t in self.transfers
            ],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schedule:
        """Parse a schedule; only ``steps`` is required (all on device 0 when ``step_devices`` is absent).

        Every malformed field raises ``ScheduleError`` naming the field, never a bare TypeError/KeyError.
        """
        if not isinstance(data, Mapping) or "steps" not in data:
            raise ScheduleError("a schedule must be a JSON object with a 'steps' list")
        raw_steps = _parse_list(data["steps"], "steps")
        devices = data.get("step_devices")
        devices = [0] * len(raw_steps) if devices is None else _parse_list(devices, "step_devices")
        if len(devices) != len(raw_steps):
            raise ScheduleError(f"step_devices has {len(devices)} entries for {len(raw_steps)} steps")
        steps = tuple(
            Step(
                tuple(_parse_cell(cell, f"steps[{i}]") for cell in _parse_list(raw, f"steps[{i}]")),
                _parse_int(device, f"step_devices[{i}]"),
            )
            for i, (raw, device) in enumerate(zip(raw_steps, devices, strict=True))
        )
        transfers = tuple(
            _parse_transfer(raw, f"transfers[{i}]")
            for i, raw in enumerate(_parse_list(data.get("transfers", []), "transfers"))
        )
        default_devices = 1 + max((step.device for step in steps), default=0)
        num_devices = _parse_int(data.get("num_devices", default_devices), "num_devices")
        options = data.get("options", {})
        if not isinstance(options, Mapping):
            raise ScheduleError(f"options: expected a JSON object, got {options!r}")
        return cls(steps, transfers, str(data.get("scheduler", "custom")), num_devices, dict(options))

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        return cls.from_dict(_parse_json(text, "schedule"))


def _parse_json(text: str, what: str) -> Any:
    """``json.loads``, a malformed document being a ``ScheduleError`` that says which kind of schedule."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScheduleError(f"{what} is not valid JSON: {exc}") from exc


def _parse_list(raw: Any, where: str) -> list:
    if not isinstance(raw, list | tuple):
        raise ScheduleError(f"{where}: expected a list, got {raw!r}")
    return list(raw)


def _parse_int(raw: Any, where: str) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise ScheduleError(f"{where}: expected an integer, got {raw!r}")
    return raw


def _parse_cell(raw: Any, where: str) -> Cell:
    if (
        not isinstance(raw, list | tuple)
        or len(raw) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw)
    ):
        raise ScheduleError(f"{where}: {raw!r} is not a cell: expected [layer, segment] integers")
    return Cell(raw[0], raw[1])


def _parse_transfer(raw: Any, where: str) -> Transfer:
    if not isinstance(raw, Mapping) or not {"cell", "src", "dst"} <= raw.keys():
        raise ScheduleError(f"{where}: expected an object with 'cell', 'src' and 'dst', got {raw!r}")
    return Transfer(
        _parse_cell(raw["cell"], f"{where}.cell"),
        _parse_int(raw["src"], f"{where}.src"),
        _parse_int(raw["dst"], f"{where}.dst"),
    )
