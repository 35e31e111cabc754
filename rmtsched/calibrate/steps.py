"""A real run timed step by step: the measured side of a real-run trace and of a per-step comparison.

One extra, untimed run of a schedule with ``sim.trace.StepRecorder`` on the executor's step hook. It is
kept apart from the timed runs because on CUDA the recorder synchronises the device at every step
boundary (a step's time is then its device work), which the timed runs must not pay. ``write_traces``
puts the measured and the simulated trace of one schedule side by side (same step, cell and track names).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from rmtsched.backends.protocol import RecurrentModel
from rmtsched.backends.torch.executor import execute
from rmtsched.backends.torch.timing import synchronize
from rmtsched.fileio import OutputPathError, check_writable
from rmtsched.sched import Schedule
from rmtsched.sim.result import SimResult
from rmtsched.sim.trace import StepRecorder, write_chrome_trace

TracePair = tuple[Path, Path]  # (measured, simulated) trace files of one schedule


def record_steps(model: RecurrentModel, inputs: torch.Tensor, schedule: Schedule) -> StepRecorder:
    """Run ``schedule`` on ``model`` over ``inputs`` once, outputs dropped; the recorder holds each step's
    start and end (seconds; ``recorder.trace(schedule)`` is its Chrome trace)."""
    device = getattr(model, "device", None)
    cuda = device is not None and torch.device(device).type == "cuda"
    recorder = StepRecorder(sync=partial(synchronize, device) if cuda else None)
    execute(model, inputs, schedule, collect_outputs=False, on_step=recorder)
    return recorder


def trace_paths(trace_dir: Path | str, schedules: list[str]) -> dict[str, TracePair]:
    """``DIR/<schedule>.measured.json`` and ``DIR/<schedule>.simulated.json`` for each schedule, checked
    writable now (``DIR`` is created if its parent exists), so a bad path fails before any run."""
    trace_dir = Path(trace_dir)
    if trace_dir.exists() and not trace_dir.is_dir():
        raise OutputPathError(f"trace directory {str(trace_dir)!r} is a file: expected a directory")
    if not trace_dir.exists():
        check_writable(trace_dir, "trace directory")
        trace_dir.mkdir()
    return {
        name: (check_writable(trace_dir / f"{name}.measured.json", "trace file"),
               check_writable(trace_dir / f"{name}.simulated.json", "trace file"))
        for name in schedules
    }


def write_traces(paths: TracePair, simulated: SimResult, recorder: StepRecorder, title: str) -> None:
    """The measured run (``recorder``) and the simulated one of the same schedule, each written atomically."""
    measured_path, simulated_path = paths
    recorder.write(simulated.timeline.schedule, measured_path, name=f"measured: {title}")
    write_chrome_trace(simulated, simulated_path, name=f"simulated: {title}")


__all__ = ["TracePair", "record_steps", "trace_paths", "write_traces"]
