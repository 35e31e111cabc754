"""Replay recorded GPU measurements through the simulator: predicted vs recorded, figure by figure.

A recording (``bench/data/*.json``) lists runs of the real backend (model, tokens, GEMM mode, measured time
per schedule, or only a measured diagonal/sequential speed-up) with where each figure came from. Each is
predicted with a hardware spec (a preset, or the preset with a recorded calibration's fields) so the
cost model's GPU accuracy is a number anyone can recompute on a CPU.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmtsched.errors import SpecError
from rmtsched.sched import SchedulerOptions, graph_for_tokens
from rmtsched.sim.cost import CostModel
from rmtsched.sim.study import ENGINES
from rmtsched.sim.workload import workload_from_spec
from rmtsched.specs.hardware import HardwareSpec
from rmtsched.specs.model import load_model_spec


@dataclass(frozen=True)
class RecordedRun:
    """One model and length on the real backend: measured seconds per schedule and/or a measured speed-up."""

    source: str
    model: str
    seq_len: int
    gemm_mode: str
    row_loop_fraction: float
    times_s: Mapping[str, float]
    speedup: float | None = None

    def measured_speedup(self) -> float | None:
        """Diagonal over sequential, from the recorded times or the recorded ratio."""
        if "sequential" in self.times_s and "diagonal" in self.times_s:
            return self.times_s["sequential"] / self.times_s["diagonal"]
        return self.speedup


@dataclass(frozen=True)
class Recording:
    provenance: str
    calibration: Mapping[str, Any]
    runs: tuple[RecordedRun, ...]

    def calibrated(self, preset: HardwareSpec) -> HardwareSpec:
        """``preset`` with the recorded calibration's fitted fields."""
        return preset.replace(name=f"{preset.name}+recorded-calibration", **self.calibration["fields"])


def load_recording(path: str | Path) -> Recording:
    data = json.loads(Path(path).read_text())
    try:
        runs = tuple(RecordedRun(**run) for run in data["runs"])
        return Recording(data["provenance"], data["calibration"], runs)
    except (KeyError, TypeError) as exc:
        raise SpecError(f"recording {str(path)!r} is not a replay file: {exc}") from exc


@dataclass(frozen=True)
class ReplayRow:
    """One recorded figure and its prediction: ``kind`` is a schedule name (seconds) or "speed-up" (ratio)."""

    run: RecordedRun
    kind: str
    recorded: float
    predicted: float

    @property
    def error(self) -> float:
        """Relative error of the prediction: predicted / recorded - 1."""
        return self.predicted / self.recorded - 1.0


def predict_s(run: RecordedRun, hardware: HardwareSpec, schedule: str) -> float:
    """Predicted makespan of ``schedule`` for the run's model (in bf16) and length, in its GEMM mode."""
    spec = load_model_spec(run.model).replace(dtype_bytes=2)
    hardware = hardware.replace(row_loop_fraction=run.row_loop_fraction)
    graph = graph_for_tokens(spec, run.seq_len)
    result = ENGINES["analytic"](schedule, graph, CostModel(workload_from_spec(spec), hardware), SchedulerOptions())
    return result.makespan_s


def replay(recording: Recording, hardware: HardwareSpec) -> list[ReplayRow]:
    """Every recorded time and speed-up with its prediction on ``hardware``."""
    rows = []
    for run in recording.runs:
        predicted = {name: predict_s(run, hardware, name) for name in {"sequential", "diagonal", *run.times_s}}
        rows += [ReplayRow(run, name, seconds, predicted[name]) for name, seconds in run.times_s.items()]
        measured = run.measured_speedup()
        if measured is not None:
            rows.append(ReplayRow(run, "speed-up", measured, predicted["sequential"] / predicted["diagonal"]))
    return rows


def median_abs_error(rows: Sequence[ReplayRow], speedups: bool) -> float:
    """Median |relative error| over the time rows (``speedups`` False) or the speed-up rows (True)."""
    errors = [abs(row.error) for row in rows if (row.kind == "speed-up") == speedups]
    return statistics.median(errors)


__all__ = ["RecordedRun", "Recording", "ReplayRow", "load_recording", "median_abs_error", "predict_s", "replay"]
