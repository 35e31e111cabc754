"""The recorded H200 measurements replayed through the cost model: every figure predicted, targets held."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rmtsched.errors import SpecError
from rmtsched.sim.replay import load_recording, median_abs_error, replay
from rmtsched.specs.hardware import load_hardware_spec

RECORDING = Path(__file__).parents[2] / "bench" / "data" / "h200_2026-11-26.json"


def test_every_recorded_figure_is_predicted() -> None:
    recording = load_recording(RECORDING)
    rows = replay(recording, load_hardware_spec("h200"))
    times = sum(len(run.times_s) for run in recording.runs)
    speedups = sum(run.measured_speedup() is not None for run in recording.runs)
    assert len(rows) == times + speedups == 23
    assert all(row.predicted > 0 and row.run.source for row in rows)


@pytest.mark.parametrize(("calibrated", "target"), [(False, 0.20), (True, 0.15)])
def test_h200_replay_meets_the_accuracy_targets(calibrated: bool, target: float) -> None:
    recording = load_recording(RECORDING)
    preset = load_hardware_spec("h200")
    rows = replay(recording, recording.calibrated(preset) if calibrated else preset)
    assert median_abs_error(rows, speedups=False) <= target
    assert median_abs_error(rows, speedups=True) <= target


def test_the_old_five_microsecond_preset_misses_by_far() -> None:
    """The replay can fail: the preset before issue 14 (5 us launches, no host time) is off by more than 2x."""
    recording = load_recording(RECORDING)
    old = load_hardware_spec("h200").replace(
        launch_overhead_s=5e-6, host_overhead_s=0.0, host_cell_overhead_s=0.0, host_step_overhead_s=0.0,
        host_row_overhead_s=0.0,
    )
    assert median_abs_error(replay(recording, old), speedups=False) > 0.5


def test_a_file_that_is_not_a_recording_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"runs": []}))
    with pytest.raises(SpecError, match="not a replay file"):
        load_recording(path)
