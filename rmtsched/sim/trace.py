"""Pictures of a run: a Chrome/Perfetto trace and a Gantt chart, from step start and end times.

The times come from the event engine's timeline or from a real run (``StepRecorder``, an executor step
hook), and both traces use the same names (``step_name``, ``cell_name``) and tracks, so a simulated and
a measured trace of one schedule open side by side in ui.perfetto.dev. One device: a "device 0" track
of steps and one track per layer with the cells each step runs there. Several devices: one track per
device, one per link. The Gantt chart (matplotlib, imported only when asked for) draws the same picture:
layers (one device) or devices on y, time on x, each step a block across the rows it occupies,
coloured by segment, with the step boundaries drawn, so a diagonal step shows as a wavefront.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rmtsched.errors import RmtschedError
from rmtsched.fileio import atomic_write_bytes, atomic_write_text
from rmtsched.sched import Cell, Schedule, Step
from rmtsched.sim.result import SimResult, Timeline

_LAYER_TRACK_BASE = 100  # layer tracks of a one-device trace
_LINK_TRACK_BASE = 1000  # link tracks get thread ids past any device's


def step_name(index: int, step: Step) -> str:
    """The name of step ``index`` in every trace: its number and width."""
    return f"step {index} (w={step.width})"


def cell_name(cell: Cell) -> str:
    return f"cell ({cell.layer}, {cell.segment})"


def _require_timeline(result: SimResult) -> Timeline:
    if result.timeline is None:
        raise RmtschedError(
            f"the {result.engine} engine keeps no per-step timeline: traces and plots need the des engine"
        )
    return result.timeline


def _track_name(tid: int, name: str) -> dict[str, Any]:
    return {"name": "thread_name", "ph": "M", "pid": 0, "tid": tid, "args": {"name": name}}


def _span(name: str, category: str, tid: int, start_s: float, end_s: float, **args: Any) -> dict[str, Any]:
    return {"name": name, "cat": category, "ph": "X", "pid": 0, "tid": tid, "ts": start_s * 1e6,
            "dur": (end_s - start_s) * 1e6, "args": args}


def schedule_trace(
    schedule: Schedule, start_s: Sequence[float], end_s: Sequence[float], name: str = "rmtsched"
) -> dict[str, Any]:
    """A Chrome trace of ``schedule`` whose step ``k`` ran from ``start_s[k]`` to ``end_s[k]`` (seconds).

    Every step is a "step" event on its device's track; on one device every cell is also a "cell" event on
    its layer's track, spanning its step, so the tracks show which layers each step batches.
    """
    events: list[dict[str, Any]] = [{"name": "process_name", "ph": "M", "pid": 0, "args": {"name": name}}]
    events += [_track_name(device, f"device {device}") for device in range(schedule.num_devices)]
    per_layer = schedule.num_devices == 1
    if per_layer:
        layers = sorted({cell.layer for step in schedule.steps for cell in step.cells})
        events += [_track_name(_LAYER_TRACK_BASE + layer, f"layer {layer}") for layer in layers]
    for index, step in enumerate(schedule.steps):
        start, end = float(start_s[index]), float(end_s[index])
        cells = [[cell.layer, cell.segment] for cell in step.cells]
        events.append(_span(step_name(index, step), "step", step.device, start, end, step=index, cells=cells))
        if per_layer:
            events += [
                _span(cell_name(cell), "cell", _LAYER_TRACK_BASE + cell.layer, start, end, step=index)
                for cell in step.cells
            ]
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def chrome_trace(result: SimResult, name: str = "rmtsched") -> dict[str, Any]:
    """The simulated run as a Chrome trace object: ``{"traceEvents": [...]}`` with times in microseconds."""
    timeline = _require_timeline(result)
    trace = schedule_trace(timeline.schedule, timeline.step_start_s, timeline.step_end_s, name)
    events = trace["traceEvents"]
    links = sorted({(t.src_device, t.dst_device) for t in timeline.transfers})
    link_track = {link: _LINK_TRACK_BASE + i for i, link in enumerate(links)}
    events += [_track_name(tid, f"link {link[0]}->{link[1]}") for link, tid in link_track.items()]
    events += [
        _span(cell_name(t.cell), "transfer", link_track[(t.src_device, t.dst_device)], t.start_s, t.end_s)
        for t in timeline.transfers
    ]
    return trace


def write_chrome_trace(result: SimResult, path: str | Path, name: str = "rmtsched") -> None:
    atomic_write_text(path, json.dumps(chrome_trace(result, name)))


class StepRecorder:
    """An executor step hook (``execute(..., on_step=recorder)``) that times each step of a real run.

    ``sync`` (``torch.cuda.synchronize`` on a GPU) runs before each clock read, so a step's time is its
    device work, not just its launches. Times are seconds from the first step's start.
    """

    def __init__(self, sync: Callable[[], None] | None = None, clock: Callable[[], float] = time.perf_counter):
        self.sync, self.clock = sync, clock
        self.start_s: list[float] = []
        self.end_s: list[float] = []

    def __call__(self, index: int, phase: str) -> None:
        if self.sync is not None:
            self.sync()
        (self.start_s if phase == "start" else self.end_s).append(self.clock())

    def trace(self, schedule: Schedule, name: str = "rmtsched run") -> dict[str, Any]:
        """The recorded run as a Chrome trace with the simulator's track, step and cell names."""
        if not len(self.start_s) == len(self.end_s) == schedule.num_steps:
            raise RmtschedError(
                f"recorded {len(self.start_s)} step starts and {len(self.end_s)} ends for a schedule of "
                f"{schedule.num_steps} steps: was the recorder passed to execute() for this schedule?"
            )
        origin = self.start_s[0] if self.start_s else 0.0
        return schedule_trace(
            schedule, [t - origin for t in self.start_s], [t - origin for t in self.end_s], name
        )

    def write(self, schedule: Schedule, path: str | Path, name: str = "rmtsched run") -> None:
        atomic_write_text(path, json.dumps(self.trace(schedule, name)))


def plot_gantt(
    result: SimResult, path: str | Path, title: str = "", max_steps: int = 20_000, xlim_s: float | None = None
) -> None:
    """Save a Gantt chart: layers (one device) or devices on y, each step one block across its rows,
    coloured by segment, step boundaries as lines. Schedules longer than ``max_steps`` show their first
    ``max_steps`` (the title says so); ``xlim_s`` fixes the time axis (pictures drawn side by side)."""
    plt = pyplot()
    timeline = _require_timeline(result)
    steps = timeline.schedule.steps[:max_steps]
    by_layer = result.num_devices == 1
    rows = 1 + max(((c.layer if by_layer else s.device) for s in steps for c in s.cells), default=0)
    segments = 1 + max((cell.segment for step in steps for cell in step.cells), default=0)
    colours = plt.get_cmap("tab10" if segments <= 10 else "tab20" if segments <= 20 else "viridis", segments)
    bars: dict[int, list[tuple[float, float]]] = {}
    faces: dict[int, list[Any]] = {}
    for index, step in enumerate(steps):
        start = float(timeline.step_start_s[index])
        duration = float(timeline.step_end_s[index]) - start
        for cell in step.cells:
            row = cell.layer if by_layer else step.device
            bars.setdefault(row, []).append((start, duration))
            faces.setdefault(row, []).append(colours(cell.segment))
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.35 * rows))
    for row, spans in bars.items():
        ax.broken_barh(spans, (row - 0.45, 0.9), facecolors=faces[row], edgecolor="white", linewidth=0.6)
    if len(steps) <= 400:
        for start in timeline.step_start_s[: len(steps)]:
            ax.axvline(float(start), color="grey", linewidth=0.4, alpha=0.6)
    label = "layer" if by_layer else "device"
    ax.set_yticks(range(rows), [f"{label} {r}" for r in range(rows)])
    ax.invert_yaxis()
    ax.set_xlabel("time (s)")
    if xlim_s is not None:
        ax.set_xlim(0, xlim_s)
    shown = "" if len(steps) == timeline.schedule.num_steps else f" (first {len(steps)} steps)"
    ax.set_title(f"{title or result.scheduler}{shown}: {len(steps)} steps, makespan {result.makespan_s:.4g} s")
    mappable = plt.cm.ScalarMappable(cmap=colours, norm=plt.Normalize(-0.5, segments - 0.5))
    fig.colorbar(mappable, ax=ax, label="segment")
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (matplotlib is optional: the ``plot`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RmtschedError("plots need matplotlib: pip install 'rmtsched[plot]'") from exc
    return plt


def save_png(fig: Any, path: str | Path) -> None:
    """Render ``fig`` and write it atomically (a failed plot leaves no half-written file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())


__all__ = [
    "StepRecorder",
    "cell_name",
    "chrome_trace",
    "plot_gantt",
    "pyplot",
    "save_png",
    "schedule_trace",
    "step_name",
    "write_chrome_trace",
]
