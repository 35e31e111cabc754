"""Prediction accuracy after calibration: calibrate this machine, then compare every schedule of three models.

Runs ``rmtsched calibrate`` once (or loads ``--hardware``), then ``rmtsched compare`` on an overhead-bound
(armt-tiny), a mid (armt-small) and a compute-bound (armt-small at d_model 512, bench_backend.py's config)
model, and prints predicted vs measured time per schedule, the median |relative error| per model and overall,
and the predicted vs measured diagonal/sequential speedup, against the issue-6 targets (median |error| <= 15%,
speedup within 10%). The machine's load average is printed with every phase: timings taken while other
work runs are inflated, and a calibration and a comparison under different load disagree. Each comparison
also says how far apart the measured times of schedules that run exactly the same steps were (diagonal
and greedy usually do): that spread is the machine's noise, a floor under any prediction error.

    .venv/bin/python bench/bench_accuracy.py [--threads N] [--repeat R] [--hardware hw.json] [--out hw.json]
                                             [--wait-quiet SECONDS]

With ``--wait-quiet``, each phase first waits (up to SECONDS) until the whole machine has been idle (< 10%
busy, from /proc/stat) for three seconds in a row, and the busy fraction seen during the phase is printed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from rmtsched.backends.torch import build_model, execute
from rmtsched.calibrate import calibrate, compare, resolve_target
from rmtsched.calibrate.compare import Comparison
from rmtsched.calibrate.device import using_threads
from rmtsched.sched import graph_for_tokens, make_schedule
from rmtsched.specs.hardware import load_hardware_spec
from rmtsched.specs.model import ModelSpec, load_model_spec

MEDIAN_TARGET = 0.15
SPEEDUP_TARGET = 0.10


def configs() -> list[tuple[str, ModelSpec, int]]:
    """(label, spec, tokens): overhead-bound, mid, compute-bound."""
    small = load_model_spec("armt-small")
    return [
        ("small / overhead-bound", load_model_spec("armt-tiny"), 4096),
        ("mid", small, 4096),
        ("compute-bound", small.replace(name="armt-small-d512", d_model=512, mlp_dim=2048), 1024),
    ]


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def cpu_times() -> tuple[int, int]:
    """(total, idle) jiffies of all CPUs since boot (Linux)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    return sum(fields), fields[3] + fields[4]


def busy_since(start: tuple[int, int]) -> float:
    """Fraction of all CPUs' time spent busy (any process, ours included) since ``start``."""
    total, idle = cpu_times()
    return 1.0 - (idle - start[1]) / max(1, total - start[0])


class OthersMeter:
    """CPUs used on average by OTHER processes during a phase: machine busy time minus our own CPU time."""

    def __init__(self) -> None:
        self.jiffies, self.own, self.wall = cpu_times(), _own_cpu_s(), time.monotonic()

    def cpus(self) -> float:
        total, idle = cpu_times()
        busy_s = ((total - self.jiffies[0]) - (idle - self.jiffies[1])) / os.sysconf("SC_CLK_TCK")
        return max(0.0, busy_s - (_own_cpu_s() - self.own)) / max(1e-9, time.monotonic() - self.wall)


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def wait_quiet(limit_s: float, threshold: float = 0.10, streak: int = 3) -> str:
    """Wait until the machine is idle for ``streak`` seconds in a row, at most ``limit_s``."""
    if limit_s <= 0:
        return "no wait"
    started, quiet = time.monotonic(), 0
    while quiet < streak and time.monotonic() - started < limit_s:
        mark = cpu_times()
        time.sleep(1.0)
        quiet = quiet + 1 if busy_since(mark) < threshold else 0
    waited = time.monotonic() - started
    return f"waited {waited:.0f} s for quiet" if quiet >= streak else f"NOT quiet after {waited:.0f} s"


class SpeedReference:
    """A fixed workload (sequential armt-tiny on 512 tokens) timed at calibration and before each comparison.

    The ratio of its times says how much faster or slower the machine itself ran than when it was
    calibrated; a prediction error of the same size and sign is drift, not the cost model. Diagnostic
    only: predictions are never rescaled by it.
    """

    def __init__(self, threads: int) -> None:
        spec = load_model_spec("armt-tiny")
        model = build_model(spec, seed=0)
        inputs = torch.randint(0, spec.vocab_size, (1, 512), generator=torch.Generator().manual_seed(0))
        schedule = make_schedule(graph_for_tokens(spec, 512), "sequential")
        target = resolve_target("cpu", "fp32", threads)

        def run() -> None:
            with using_threads(target):
                execute(model, inputs, schedule, collect_outputs=False)

        self.run = run
        run()  # warm-up
        self.baseline = self.seconds()

    def seconds(self) -> float:
        times = []
        for _ in range(7):
            start = time.perf_counter()
            self.run()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def drift(self) -> str:
        return f"machine {self.seconds() / self.baseline:.2f}x the calibration-time reference"


def identical_work_spread(result: Comparison) -> float:
    """Largest |t_a / t_b - 1| between schedules of this comparison that run exactly the same steps.

    Diagonal and greedy (and sequential and one-device pipelined) often do: what their measured times
    differ by is the machine's noise, a floor under any prediction error.
    """
    steps = {
        row.schedule: [frozenset(step.cells) for step in make_schedule(result.graph, row.schedule,
                                                                      num_devices=1).steps]
        for row in result.rows
    }
    return max((abs(a.measured_s / b.measured_s - 1) for a, b in itertools.combinations(result.rows, 2)
                if steps[a.schedule] == steps[b.schedule]), default=0.0)


def diagonal_speedups(result: Comparison) -> tuple[float, float]:
    predicted, measured = result.speedups(result.row("diagonal"))
    return predicted, measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--hardware", default=None, help="use this spec instead of calibrating")
    parser.add_argument("--out", type=Path, default=None, help="keep the calibrated spec here")
    parser.add_argument("--json", type=Path, default=None, help="write every record here")
    parser.add_argument("--wait-quiet", type=float, default=0.0, help="wait up to this long for an idle machine")
    args = parser.parse_args(argv)
    target = resolve_target("cpu", "fp32", args.threads)
    print(f"# {target.threads} threads; {load()} at start", flush=True)
    reference = None
    if args.hardware:
        hardware = load_hardware_spec(args.hardware)
    else:
        waited = wait_quiet(args.wait_quiet)
        started, others = time.perf_counter(), OthersMeter()
        calibration = calibrate(target, progress=False)
        reference = SpeedReference(target.threads)
        hardware = calibration.hardware
        steps = calibration.stages[-1]
        print(f"# calibrated in {time.perf_counter() - started:.1f} s ({waited}; other processes used "
              f"{others.cpus():.2f} CPUs meanwhile, {load()}); step/run-level fit median |error| "
              f"{100 * steps.median_abs_rel_error:.1f}%", flush=True)
        out = args.out or Path(tempfile.mkdtemp()) / "hw.json"
        hardware.save(out)
        out.with_suffix(".report.json").write_text(json.dumps(calibration.report(), indent=1))
        print(f"# spec written to {out} (every measurement in {out.with_suffix('.report.json')})", flush=True)
    records, summary = [], []
    print("| model | schedule | predicted | measured | error | speedup pred | speedup meas |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, spec, tokens in configs():
        waited = wait_quiet(args.wait_quiet)
        drift = f"; {reference.drift()}" if reference else ""
        others = OthersMeter()
        result = compare(spec, hardware, tokens, target, repeat=args.repeat, progress=False)
        when = (f"{waited}; others used {others.cpus():.2f} CPUs; {load()}{drift}; schedules doing identical "
                f"steps measured up to {100 * identical_work_spread(result):.0f}% apart")
        for row in result.rows:
            predicted, measured = result.speedups(row)
            print(f"| {spec.name} ({label}, {tokens:,} tokens) | {row.schedule} | {row.predicted_s:.3f} s | "
                  f"{row.measured_s:.3f} s | {100 * row.rel_error:+.1f}% | {predicted:.2f}x | {measured:.2f}x |",
                  flush=True)
        predicted, measured = diagonal_speedups(result)
        summary.append((spec.name, result.median_abs_rel_error, predicted, measured, when))
        records += result.records()
    print()
    print("| model | median abs error | diagonal speedup pred / meas | speedup error | machine during the run |")
    print("| --- | --- | --- | --- | --- |")
    for name, median, predicted, measured, when in summary:
        print(f"| {name} | {100 * median:.1f}% | {predicted:.2f}x / {measured:.2f}x | "
              f"{100 * (predicted / measured - 1):+.1f}% | {when} |")
    overall = statistics.median(abs(r["rel_error"]) for r in records)
    worst_speedup = max(abs(p / m - 1) for _, _, p, m, _ in summary)
    worst_median = max(median for _, median, _, _, _ in summary)
    met = worst_median <= MEDIAN_TARGET and worst_speedup <= SPEEDUP_TARGET
    print(f"\noverall median |error| {100 * overall:.1f}% (worst model {100 * worst_median:.1f}%, target "
          f"{100 * MEDIAN_TARGET:.0f}%); worst speedup error {100 * worst_speedup:.1f}% (target "
          f"{100 * SPEEDUP_TARGET:.0f}%): {'MET' if met else 'NOT MET'}")
    if args.json:
        args.json.write_text(json.dumps({"hardware": hardware.to_dict(), "records": records}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
