"""Training-step benchmark: sequential vs diagonal vs memory-capped BPTT, measured beside the simulator.

``rmtsched.calibrate.compare_train`` (what ``rmtsched compare --train`` runs) times one ``train_gradients`` call
(the loss and every gradient) per schedule, repeats interleaved across schedules, medians; counts the peak
activation bytes held for the backward; and simulates both on the hardware spec. This adds, per schedule,
the peak RSS a fresh process running one step adds over one that only sets up: everything (activations,
weight gradients, allocator), a second reading of memory independent of the count.

The hardware spec is the newest calibration of this CPU at the thread count the bench runs with, kept in
bench/data (``cpu_<date>_<N>thread(s).json``, written by ``rmtsched calibrate --threads N``; its notes
name the host), else the uncalibrated ``cpu-generic`` preset; the header says which.

    .venv/bin/python bench/bench_train.py                        # armt-small x 64 segments (minutes)
    .venv/bin/python bench/bench_train.py --segments 8 --repeats 1 --no-rss
    .venv/bin/python bench/bench_train.py --threads 1 --clock process   # CPU time: robust to a busy machine
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch

from rmtsched.backends.torch import build_model, train_gradients
from rmtsched.calibrate.compare_train import (
    MEMORY_CAPPED,
    TrainComparison,
    compare_train,
    train_batch,
    train_schedules,
)
from rmtsched.calibrate.device import Target, describe_host, resolve_target
from rmtsched.cli.cmd_compare import format_train_comparison
from rmtsched.cli.output import to_json
from rmtsched.sched import TrainGraph, graph_for_tokens
from rmtsched.specs.hardware import load_hardware_spec
from rmtsched.specs.model import load_model_spec

DATA = Path(__file__).parent / "data"
SCHEDULES = ("sequential", "diagonal", MEMORY_CAPPED)


def choose_hardware(given: str | None, target: Target) -> tuple[str, str]:
    """The spec to simulate on, and a note saying where it comes from: ``given``, else the newest spec in
    bench/data that ``rmtsched calibrate`` fitted on this host at ``target``'s thread count (its notes name the
    CPU, the threads and torch), else the generic preset."""
    if given is not None:
        return given, "--hardware"
    host = describe_host(target)
    matching = [path for path in sorted(DATA.glob("cpu_*.json")) if host in load_hardware_spec(path).notes]
    if not matching:
        return "cpu-generic", "uncalibrated: bench/data holds no calibration of this host at these threads"
    return str(matching[-1]), f"fitted on this host at these threads: {matching[-1].name}"


def run_child(args: argparse.Namespace) -> None:
    """Set up as ``compare_train`` does (same seeded weights and batch) and run one step of ``args.child``
    ('none': set up only)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = load_model_spec(args.model)
    model = build_model(spec, seed=0)
    seq_len = args.segments * spec.segment_len
    inputs, targets = train_batch(spec, seq_len, args.batch_size, seed=0)
    if args.child != "none":
        graph = TrainGraph(graph_for_tokens(spec, seq_len))
        schedule = train_schedules(graph, [args.child], memory_budget=args.memory_budget)[args.child]
        train_gradients(model, inputs, targets, schedule, validate=False)


def peak_rss_bytes(schedule: str) -> int:
    """Peak RSS of a fresh process that runs one training step of ``schedule`` ('none': setup only)."""
    child = subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--child", schedule])
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"the {schedule} child failed with status {status}")
    return usage.ru_maxrss * 1024


def print_report(result: TrainComparison, rss: dict[str, int], hardware_note: str, loads: list[float]) -> None:
    print(f"simulator on {result.hardware.name} ({hardware_note}); load average {loads[0]:.2f} before, "
          f"{loads[1]:.2f} after")
    print(format_train_comparison(result))
    if rss:
        extra = ", ".join(f"{name} {rss[name] / 1e6:.0f} MB" for name in rss)
        print(f"peak RSS one step adds in a fresh process (activations, gradients, allocator): {extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="armt-small")
    parser.add_argument("--segments", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--memory-budget", type=int, default=None, help="checkpointed's budget in cells (default 2 L)")
    parser.add_argument("--hardware", default=None, help="a hardware spec (default: see the module docstring)")
    parser.add_argument("--schedule", action="append", default=None, help=f"repeatable (default {SCHEDULES})")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clock", default="wall", help="wall, or process: CPU time, for --threads 1 on a busy machine")
    parser.add_argument("--no-rss", action="store_true", help="skip the fresh-process peak RSS runs")
    parser.add_argument("--json", action="store_true", help="also print the records (a JSON list)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return
    spec = load_model_spec(args.model)
    names = args.schedule or list(SCHEDULES)
    target = resolve_target("cpu", "fp32", args.threads)
    hardware, hardware_note = choose_hardware(args.hardware, target)
    loads = [os.getloadavg()[0]]
    rss = {}
    if not args.no_rss:
        baseline = peak_rss_bytes("none")
        rss = {name: peak_rss_bytes(name) - baseline for name in names}
    result = compare_train(
        spec, load_hardware_spec(hardware), args.segments * spec.segment_len, target, schedules=names,
        batch_size=args.batch_size, memory_budget=args.memory_budget if MEMORY_CAPPED in names else None,
        repeat=args.repeats, progress=sys.stderr.isatty(), clock_name=args.clock,
    )
    loads.append(os.getloadavg()[0])
    print_report(result, rss, hardware_note, loads)
    if args.json:
        records = [{**record, "measured_peak_rss_bytes": rss.get(record["schedule"])} for record in result.records()]
        print(to_json(records))


if __name__ == "__main__":
    main()
