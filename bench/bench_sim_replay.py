"""Replay the recorded H200 measurements through the simulator: predicted vs recorded for every figure.

    .venv/bin/python bench/bench_sim_replay.py [--recording bench/data/h200_2026-11-26.json] [--runtime eager]

Two specs: the ``h200`` preset (vendor figures, the runtime's host overheads) and the same preset with the
recorded calibration's fitted fields. Targets (issue 14): median |error| <= 20% with the preset and <= 15%
calibrated, on times and on the diagonal/sequential speed-ups. Runs on a CPU in about a second.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from rmtsched.sim.replay import ReplayRow, load_recording, median_abs_error, replay
from rmtsched.specs.hardware import load_hardware_spec

DEFAULT = Path(__file__).parent / "data" / "h200_2026-11-26.json"


def table(rows: list[ReplayRow]) -> str:
    lines = [
        "| model | tokens | GEMM mode | figure | recorded | predicted | error |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        unit = "x" if row.kind == "speed-up" else " s"
        lines.append(
            f"| {row.run.model} | {row.run.seq_len:,} | {row.run.gemm_mode} | {row.kind} | "
            f"{row.recorded:.4g}{unit} | {row.predicted:.4g}{unit} | {100 * row.error:+.1f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recording", type=Path, default=DEFAULT)
    parser.add_argument("--hardware", default="h200")
    parser.add_argument("--runtime", default="eager")
    args = parser.parse_args()
    recording = load_recording(args.recording)
    preset = load_hardware_spec(args.hardware).with_runtime(args.runtime)
    print(recording.provenance, "\n")
    for label, hardware, targets in (
        (f"preset {preset.name} ({args.runtime})", preset, (0.20, 0.20)),
        ("recorded calibration", recording.calibrated(preset), (0.15, 0.15)),
    ):
        rows = replay(recording, hardware)
        times, speedups = median_abs_error(rows, speedups=False), median_abs_error(rows, speedups=True)
        print(f"## {label}\n\n{table(rows)}\n")
        print(
            f"median |error|: times {100 * times:.1f}% (target <= {100 * targets[0]:.0f}%), "
            f"speed-ups {100 * speedups:.1f}% (target <= {100 * targets[1]:.0f}%)\n"
        )
    print("## for context: the cost model before the runtime fields (additive launch, no host/device overlap)\n")
    additive = dict(host_overhead_s=0.0, host_cell_overhead_s=0.0, host_step_overhead_s=0.0, host_row_overhead_s=0.0)
    for label, hardware in (
        ("old h200 preset: 5 us launches", preset.replace(launch_overhead_s=5e-6, sm_count=0, **additive)),
        ("recorded calibration in the additive model, each looped row a 73 us launch (a reconstruction)",
         recording.calibrated(preset).replace(launch_overhead_s=73e-6, **additive)),
    ):
        rows = replay(recording, hardware)
        diagonal = [abs(row.error) for row in rows if row.kind == "diagonal"]
        print(
            f"- {label}: median |error| times {100 * median_abs_error(rows, speedups=False):.1f}%, "
            f"speed-ups {100 * median_abs_error(rows, speedups=True):.1f}%; diagonal rows "
            + ", ".join(f"{100 * row.error:+.0f}%" for row in rows if row.kind == "diagonal")
            + f" (median |error| {100 * statistics.median(diagonal):.0f}%)"
        )


if __name__ == "__main__":
    main()
