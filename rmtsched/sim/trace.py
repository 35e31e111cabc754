"""Pictures of a simulated run: a Chrome/Perfetto trace and a Gantt chart, from the event engine's timeline.

The trace (``chrome://tracing`` / ui.perfetto.dev JSON) has one track per device with one complete
event per step, and one track per link with its transfers. The Gantt chart (matplotlib, imported only
when asked for) has one row per device; each step is split into its cells, coloured by layer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rmtsched.errors import RmtschedError
from rmtsched.fileio import atomic_write_text, atomic_writer
from rmtsched.sim.result import SimResult, Timeline

_LINK_TRACK_BASE = 1000  # link tracks get thread ids past any device's


def _require_timeline(result: SimResult) -> Timeline:
    if result.timeline is None:
        raise RmtschedError(
            f"the {result.engine} engine keeps no per-step timeline: traces and plots need the des engine"
        )
    return result.timeline


def _track_name(tid: int, name: str) -> dict[str, Any]:
    return {"name": "thread_name", "ph": "M", "pid": 0, "tid": tid, "args": {"name": name}}


def chrome_trace(result: SimResult, name: str = "rmtsched") -> dict[str, Any]:
    """The run as a Chrome trace object: ``{"traceEvents": [...]}`` with times in microseconds."""
    timeline = _require_timeline(result)
    events: list[dict[str, Any]] = [{"name": "process_name", "ph": "M", "pid": 0, "args": {"name": name}}]
    for device in range(result.num_devices):
        events.append(_track_name(device, f"device {device}"))
    for index, step in enumerate(timeline.schedule.steps):
        start = float(timeline.step_start_s[index])
        layers = sorted({cell.layer for cell in step.cells})
        events.append({
            "name": f"step {index} (w={step.width}, layers {layers[0]}-{layers[-1]})",
            "cat": "step",
            "ph": "X",
            "pid": 0,
            "tid": step.device,
            "ts": start * 1e6,
            "dur": (float(timeline.step_end_s[index]) - start) * 1e6,
            "args": {"step": index, "cells": [[cell.layer, cell.segment] for cell in step.cells]},
        })
    links = sorted({(t.src_device, t.dst_device) for t in timeline.transfers})
    link_track = {link: _LINK_TRACK_BASE + i for i, link in enumerate(links)}
    for link, tid in link_track.items():
        events.append(_track_name(tid, f"link {link[0]}->{link[1]}"))
    for transfer in timeline.transfers:
        events.append({
            "name": f"cell ({transfer.cell.layer}, {transfer.cell.segment})",
            "cat": "transfer",
            "ph": "X",
            "pid": 0,
            "tid": link_track[(transfer.src_device, transfer.dst_device)],
            "ts": transfer.start_s * 1e6,
            "dur": (transfer.end_s - transfer.start_s) * 1e6,
        })
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_chrome_trace(result: SimResult, path: str | Path, name: str = "rmtsched") -> None:
    atomic_write_text(path, json.dumps(chrome_trace(result, name)))


def plot_gantt(result: SimResult, path: str | Path, title: str = "", max_steps: int = 20_000) -> None:
    """Save a Gantt chart: one row per device, each step's cells side by side coloured by layer.

    Schedules longer than ``max_steps`` steps show their first ``max_steps`` (the title says so).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RmtschedError("--plot needs matplotlib: pip install 'rmtsched[plot]'") from exc
    timeline = _require_timeline(result)
    steps = timeline.schedule.steps[:max_steps]
    num_layers = 1 + max((cell.layer for step in steps for cell in step.cells), default=0)
    colours = plt.get_cmap("viridis", max(num_layers, 2))
    bars: dict[int, list[tuple[float, float]]] = {}
    faces: dict[int, list[Any]] = {}
    for index, step in enumerate(steps):
        start = float(timeline.step_start_s[index])
        width = (float(timeline.step_end_s[index]) - start) / step.width
        for i, cell in enumerate(step.cells):
            bars.setdefault(step.device, []).append((start + i * width, width))
            faces.setdefault(step.device, []).append(colours(cell.layer))
    fig, ax = plt.subplots(figsize=(12, 1.0 + 0.6 * result.num_devices))
    for device, spans in bars.items():
        ax.broken_barh(spans, (device - 0.4, 0.8), facecolors=faces[device], linewidth=0)
    ax.set_yticks(range(result.num_devices), [f"device {d}" for d in range(result.num_devices)])
    ax.invert_yaxis()
    ax.set_xlabel("time (s)")
    shown = "" if len(steps) == timeline.schedule.num_steps else f" (first {len(steps)} steps)"
    ax.set_title(f"{title or result.scheduler}{shown}: makespan {result.makespan_s:.4g} s")
    mappable = plt.cm.ScalarMappable(cmap=colours, norm=plt.Normalize(-0.5, num_layers - 0.5))
    fig.colorbar(mappable, ax=ax, label="layer")
    fig.tight_layout()
    with atomic_writer(path, "wb") as file:  # a file object: the format comes from the name, as savefig(path) did
        fig.savefig(file, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)


__all__ = ["chrome_trace", "plot_gantt", "write_chrome_trace"]
