"""Scheduling at scale: build the cell DAG, the diagonal schedule, and validate it for 1M cells.

Issue 2's target: 32 layers x 32,768 segments (1,048,576 cells) in under 10 s and under 2 GiB on the
2-core development machine. Each phase prints its wall time; peak RSS comes from ``getrusage``. With
``--networkx`` it also times ``CellGraph.to_networkx()`` in a child process (so its memory is measured
on its own), which is why networkx is the user-facing view and not the internal form.

    .venv/bin/python bench/bench_sched.py [--layers 32] [--segments 32768] [--rule layer_local]
                                          [--scheduler diagonal] [--devices 1] [--networkx]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rmtsched.sched import build_cell_graph, make_schedule, validate


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(label: str, function: Callable[[], Any], timings: dict[str, float]) -> Any:
    start = time.perf_counter()
    result = function()
    timings[label] = time.perf_counter() - start
    print(f"{label:>12}: {timings[label]:7.3f} s   peak RSS {peak_rss_mib():8.1f} MiB", flush=True)
    return result


def run_pipeline(num_layers: int, num_segments: int, rule: str, scheduler: str, devices: int) -> dict[str, float]:
    """Time the three phases the issue names; return the timings plus the peak RSS."""
    timings: dict[str, float] = {}
    baseline_mib = peak_rss_mib()
    print(f"{'imports':>12}:           peak RSS {baseline_mib:8.1f} MiB (python + rmtsched.sched + numpy + networkx)")
    options = {"num_devices": devices} if devices > 1 else {}
    graph = timed("build DAG", lambda: build_cell_graph(num_layers, num_segments, rule=rule), timings)
    schedule = timed("schedule", lambda: make_schedule(graph, scheduler, **options), timings)
    timed("validate", lambda: validate(schedule, graph), timings)
    timings["total"] = sum(timings.values())
    timings["peak_rss_mib"] = peak_rss_mib()
    timings["import_rss_mib"] = baseline_mib
    print(
        f"{'total':>12}: {timings['total']:7.3f} s   peak RSS {timings['peak_rss_mib']:8.1f} MiB "
        f"({graph.num_cells:,} cells, {schedule.num_steps:,} steps, {scheduler} on {rule})"
    )
    return timings


def high_water_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process image from /proc (Linux), in MiB.

    ``ru_maxrss`` survives ``exec``: a child started by subprocess (vfork + exec) inherits the parent's
    peak, so the networkx child reads its own address space's high-water mark instead.
    """
    status = Path("/proc/self/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def run_networkx(num_layers: int, num_segments: int, rule: str) -> dict[str, float]:
    """Time ``to_networkx()`` alone and report how much the process grew to hold the networkx graph."""
    graph = build_cell_graph(num_layers, num_segments, rule=rule)
    before_mib, _ = high_water_mib()
    start = time.perf_counter()
    nx_graph = graph.to_networkx()
    seconds = time.perf_counter() - start
    _, peak_mib = high_water_mib()
    return {
        "seconds": seconds,
        "peak_rss_mib": peak_mib,
        "before_mib": before_mib,
        "nodes": nx_graph.number_of_nodes(),
        "edges": nx_graph.number_of_edges(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--segments", type=int, default=32768)
    parser.add_argument("--rule", default="layer_local")
    parser.add_argument("--scheduler", default="diagonal")
    parser.add_argument("--devices", type=int, default=1, help="num_devices (for the pipelined scheduler)")
    parser.add_argument("--networkx", action="store_true", help="also time to_networkx() in a child process")
    parser.add_argument("--networkx-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.networkx_only:
        print(json.dumps(run_networkx(args.layers, args.segments, args.rule)))
        return
    run_pipeline(args.layers, args.segments, args.rule, args.scheduler, args.devices)
    if args.networkx:
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--networkx-only",
                "--layers",
                str(args.layers),
                "--segments",
                str(args.segments),
                "--rule",
                args.rule,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"{'to_networkx':>12}: {result['seconds']:7.3f} s   peak RSS {result['peak_rss_mib']:8.1f} MiB "
            f"(+{result['peak_rss_mib'] - result['before_mib']:.1f} MiB in a fresh process; "
            f"{result['nodes']:,} nodes, {result['edges']:,} edges)"
        )


if __name__ == "__main__":
    main()
