"""What a simulation returns: makespan, per-device busy time and peak memory, and (event engine) the timeline.

Both engines return a ``SimResult``; the analytic one has no per-step timeline, so traces and Gantt
charts need the event engine. Utilisation is busy device-time over P x makespan; the bubble fraction
is the idle rest, 1 - utilisation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from rmtsched.sched import Cell, Schedule


class TransferRecord(NamedTuple):
    """One transfer as it happened: the producing cell, the link, and when it held the link."""

    cell: Cell
    src_device: int
    dst_device: int
    start_s: float
    end_s: float


class Event(NamedTuple):
    """One line of the event log: ``kind`` is step_start, step_end, transfer_start or transfer_end."""

    time_s: float
    kind: str
    device: int
    index: int


@dataclass(frozen=True)
class Timeline:
    """Per-step start and end times (indexed like ``schedule.steps``) and the transfers, from the DES."""

    schedule: Schedule
    step_start_s: np.ndarray
    step_end_s: np.ndarray
    transfers: tuple[TransferRecord, ...]

    def events(self) -> Iterator[Event]:
        """The event log in time order (ties: ends before starts, then by device and index)."""
        records = []
        for index, step in enumerate(self.schedule.steps):
            records.append(Event(float(self.step_start_s[index]), "step_start", step.device, index))
            records.append(Event(float(self.step_end_s[index]), "step_end", step.device, index))
        for index, transfer in enumerate(self.transfers):
            records.append(Event(transfer.start_s, "transfer_start", transfer.src_device, index))
            records.append(Event(transfer.end_s, "transfer_end", transfer.dst_device, index))
        records.sort(key=lambda e: (e.time_s, not e.kind.endswith("end"), e.device, e.index))
        return iter(records)


@dataclass(frozen=True)
class SimResult:
    """The outcome of simulating one schedule on one cost model."""

    scheduler: str
    engine: str
    num_devices: int
    num_steps: int
    num_cells: int
    makespan_s: float
    busy_s: tuple[float, ...]
    peak_memory_bytes: tuple[float, ...]
    timeline: Timeline | None = None

    @property
    def utilization(self) -> float:
        """Busy device-time over available device-time, in [0, 1]."""
        if self.makespan_s <= 0:
            return 1.0
        return min(1.0, sum(self.busy_s) / (self.num_devices * self.makespan_s))

    @property
    def device_utilization(self) -> tuple[float, ...]:
        if self.makespan_s <= 0:
            return tuple(1.0 for _ in self.busy_s)
        return tuple(min(1.0, busy / self.makespan_s) for busy in self.busy_s)

    @property
    def bubble_fraction(self) -> float:
        """Idle device-time fraction; for a P-stage pipeline of S equal segments, (P - 1) / (S + P - 1)."""
        return 1.0 - self.utilization

    @property
    def max_peak_memory_bytes(self) -> float:
        return max(self.peak_memory_bytes, default=0.0)

    def to_dict(self) -> dict[str, object]:
        """Plain numbers for JSON (the scheduler's name is left to the caller's record)."""
        return {
            "engine": self.engine,
            "devices": self.num_devices,
            "steps": self.num_steps,
            "cells": self.num_cells,
            "makespan_s": self.makespan_s,
            "utilization": self.utilization,
            "bubble_fraction": self.bubble_fraction,
            "busy_s": list(self.busy_s),
            "device_utilization": list(self.device_utilization),
            "peak_memory_bytes_per_device": list(self.peak_memory_bytes),
            "peak_memory_bytes": self.max_peak_memory_bytes,
        }


__all__ = ["Event", "SimResult", "Timeline", "TransferRecord"]
