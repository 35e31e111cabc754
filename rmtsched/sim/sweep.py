"""Parameter sweeps: a grid of studies (model, hardware, runtime, length, segment, memory, devices, batch).

Each grid point is one ``run_study`` of every requested schedule; its records are ``simulate --json``'s, so
the CSV has one row per (point, schedule) with every field of that JSON. Points are independent, so
``run_sweep`` can spread them over processes. The plots draw latency and peak memory against sequence
length, one line per schedule (and per any other dimension the sweep varies) plus full attention, the
way the Diagonal Batching paper's Figure 1 compares them.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rmtsched.fileio import atomic_write_text
from rmtsched.sim.report import run_record
from rmtsched.sim.study import run_study, schedules_for
from rmtsched.sim.trace import pyplot, save_png
from rmtsched.specs.hardware import load_hardware_spec
from rmtsched.specs.model import load_model_spec

Record = dict[str, Any]
# Grid dimensions other than the schedule; a plot line is labelled by the ones the sweep varies.
DIMENSIONS = ("model", "hardware", "runtime", "segment_len", "mem_tokens", "devices_requested", "batch_size")


@dataclass(frozen=True)
class SweepPoint:
    """One study of the grid; ``runtime``, ``segment_len`` and ``mem_tokens`` of None keep the specs' own."""

    model: str
    hardware: str
    seq_len: int
    segment_len: int | None = None
    mem_tokens: int | None = None
    devices: int = 1
    batch_size: int = 1
    runtime: str | None = None


def grid(
    models: Sequence[str],
    hardware: Sequence[str],
    seq_lens: Sequence[int],
    segment_lens: Sequence[int | None] = (None,),
    mem_tokens: Sequence[int | None] = (None,),
    devices: Sequence[int] = (1,),
    batch_sizes: Sequence[int] = (1,),
    runtimes: Sequence[str | None] = (None,),
) -> list[SweepPoint]:
    """Every combination, sequence length varying fastest."""
    combos = itertools.product(models, hardware, runtimes, segment_lens, mem_tokens, devices, batch_sizes, seq_lens)
    return [
        SweepPoint(model, hw, seq_len, segment_len, mem, num_devices, batch, runtime)
        for model, hw, runtime, segment_len, mem, num_devices, batch, seq_len in combos
    ]


def run_point(point: SweepPoint, schedule: str = "all", engine: str = "analytic",
              max_width: int | None = None) -> list[Record]:
    """``simulate``'s records for one point."""
    spec = load_model_spec(point.model)
    changes = {"segment_len": point.segment_len, "mem_tokens": point.mem_tokens}
    spec = spec.replace(**{name: value for name, value in changes.items() if value is not None})
    hardware = load_hardware_spec(point.hardware)
    if point.runtime is not None:
        hardware = hardware.with_runtime(point.runtime)
    study = run_study(
        spec, hardware, point.seq_len, schedules_for(schedule, point.devices), max_width=max_width,
        engine=engine, batch_size=point.batch_size,
    )
    return [run_record(study, run) | {"devices_requested": point.devices} for run in study.runs]


def run_sweep(
    points: Sequence[SweepPoint],
    schedule: str = "all",
    engine: str = "analytic",
    max_width: int | None = None,
    jobs: int = 1,
    progress: Callable[[int, int, SweepPoint], None] | None = None,
) -> list[Record]:
    """Records of every point, in grid order; ``jobs`` > 1 runs points in that many processes (0: one a core).

    ``progress(done, total, point)`` is called as each point finishes.
    """
    workers = (os.cpu_count() or 1) if jobs == 0 else jobs
    results: list[list[Record]] = [[] for _ in points]
    if workers <= 1 or len(points) <= 1:
        for index, point in enumerate(points):
            results[index] = run_point(point, schedule, engine, max_width)
            if progress:
                progress(index + 1, len(points), point)
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(points))) as pool:
            futures = {pool.submit(run_point, p, schedule, engine, max_width): i for i, p in enumerate(points)}
            for done, future in enumerate(as_completed(futures), start=1):
                index = futures[future]
                results[index] = future.result()
                if progress:
                    progress(done, len(points), points[index])
    return [record for records in results for record in records]


def csv_text(records: Sequence[Record]) -> str:
    """One row per record, columns in the records' key order; lists as JSON, None as an empty cell."""
    columns: list[str] = []
    for record in records:
        columns += [key for key in record if key not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({
            key: json.dumps(value) if isinstance(value, list | tuple) else ("" if value is None else value)
            for key, value in record.items()
        })
    return out.getvalue()


def write_csv(records: Sequence[Record], path: str | Path) -> Path:
    return atomic_write_text(path, csv_text(records))


def _varying(records: Sequence[Record]) -> list[str]:
    return [dim for dim in DIMENSIONS if len({record.get(dim) for record in records}) > 1]


def _series(records: Sequence[Record], label_of: Callable[[Record], str], field: str, scale: float
            ) -> dict[str, list[tuple[int, float]]]:
    """(length, value) points of each labelled line, sorted by length.

    Lines with the same points (greedy and diagonal without a width cap, one device's pipeline and the
    sequential schedule) are drawn once,
    under both labels, so no line hides another."""
    lines: dict[str, dict[int, float]] = {}
    for record in records:
        lines.setdefault(label_of(record), {})[record["seq_len"]] = record[field] * scale
    merged: dict[tuple[tuple[int, float], ...], list[str]] = {}
    for label, points in lines.items():
        # equal to 9 digits: a closed form and the event engine differ in the last bits
        merged.setdefault(tuple((x, float(f"{y:.9g}")) for x, y in sorted(points.items())), []).append(label)
    return {" = ".join(labels): list(points) for points, labels in merged.items()}


def _labels(records: Sequence[Record]) -> tuple[Callable[[Record], str], Callable[[Record], str]]:
    """Labels of a schedule's line and of full attention's line, naming only the dimensions that vary."""
    varying = _varying(records)

    def suffix(record: Record, dims: Sequence[str]) -> str:
        parts = [f"{dim}={record[dim]}" for dim in dims]
        return f" ({', '.join(parts)})" if parts else ""

    def schedule(record: Record) -> str:
        devices = f" x{record['devices']}" if record["devices"] > 1 else ""
        return f"{record['schedule']}{devices}{suffix(record, varying)}"

    baseline_dims = [dim for dim in varying if dim != "devices_requested"]

    def baseline(record: Record) -> str:
        return f"full attention{suffix(record, baseline_dims)}"

    return schedule, baseline


def plot_sweep(records: Sequence[Record], latency_path: str | Path, memory_path: str | Path) -> None:
    """Latency vs length and peak memory vs length (log-log), every schedule and full attention."""
    plt = pyplot()
    schedule, baseline = _labels(records)
    title = ", ".join(sorted({f"{r['model']} on {r['hardware']} ({r['runtime'] or '-'})" for r in records}))
    figures = (
        (latency_path, "makespan_s", "full_attention_makespan_s", "latency (s)"),
        (memory_path, "peak_memory_bytes", "full_attention_peak_memory_bytes", "peak memory per device (GB)"),
    )
    for path, field, baseline_field, ylabel in figures:
        scale = 1e-9 if field.endswith("bytes") else 1.0
        fig, ax = plt.subplots(figsize=(8, 5))
        for label, points in _series(records, schedule, field, scale).items():
            ax.plot(*zip(*points, strict=True), marker="o", label=label)
        for label, points in _series(records, baseline, baseline_field, scale).items():
            ax.plot(*zip(*points, strict=True), marker="s", linestyle="--", label=label)
        if field.endswith("bytes"):
            for capacity in sorted({r["memory_capacity_bytes"] for r in records}):
                ax.axhline(capacity * scale, color="red", linewidth=0.8, linestyle=":")
                ax.annotate(f"device memory {capacity * scale:.0f} GB", (0.01, capacity * scale),
                            xycoords=("axes fraction", "data"), color="red", fontsize=8, va="bottom")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_png(fig, path)
        plt.close(fig)


def point_label(point: SweepPoint) -> str:
    return ", ".join(f"{key}={value}" for key, value in asdict(point).items() if value is not None)


__all__ = [
    "SweepPoint",
    "csv_text",
    "grid",
    "plot_sweep",
    "point_label",
    "run_point",
    "run_sweep",
    "write_csv",
]
