"""Training-step benchmark: sequential vs diagonal vs memory-capped BPTT, measured beside the simulator.

For each training schedule of ``--model`` over ``--segments`` segments: the median wall time of one
``train_gradients`` call (repeats interleaved across schedules, after one untimed warm-up each), the peak RSS
a fresh process running one step adds over one that only sets up (activations, gradients, allocator), and
the simulator's predicted step time and peak activation bytes on ``--hardware``. The executor runs every
cell at width 1 (that is what makes the gradients exact), so on CPU the schedules differ in memory, not yet
in time; the simulator's times assume batched steps.

    .venv/bin/python bench/bench_train.py                        # armt-small x 64 segments (minutes)
    .venv/bin/python bench/bench_train.py --segments 8 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from rmtsched.backends.torch import build_model, train_gradients
from rmtsched.backends.torch.executor import model_graph
from rmtsched.sched import TrainGraph, make_train_schedule
from rmtsched.sim import CostModel, workload_from_spec
from rmtsched.sim.train import simulate_train
from rmtsched.specs.hardware import load_hardware_spec
from rmtsched.specs.model import load_model_spec


def setup(args: argparse.Namespace):
    """The model, a batch of ids and next-token targets, the training graph and the three schedules."""
    spec = load_model_spec(args.model)
    model = build_model(spec, seed=0)
    num_tokens = args.segments * spec.segment_len
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, spec.vocab_size, (args.batch_size, num_tokens), generator=generator)
    graph = TrainGraph(model_graph(model, num_tokens))
    budget = args.budget or 2 * spec.num_layers
    schedules = {name: make_train_schedule(graph, name, **options) for name, options in
                 (("sequential", {}), ("diagonal", {}), ("checkpointed", {"memory_budget": budget}))}
    return spec, model, inputs, torch.roll(inputs, -1, dims=1), graph, budget, schedules


def peak_rss_bytes(argv: list[str], schedule: str) -> int:
    """Peak RSS of a fresh process that runs one training step of ``schedule`` ('none': setup only)."""
    child = subprocess.Popen([sys.executable, __file__, *argv, "--child", schedule])
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"the {schedule} child failed with status {status}")
    return usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="armt-small")
    parser.add_argument("--segments", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--budget", type=int, default=None, help="memory budget in cells (default 2 L)")
    parser.add_argument("--hardware", default="cpu-generic")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec, model, inputs, targets, graph, budget, schedules = setup(args)
    if args.child:
        if args.child != "none":
            train_gradients(model, inputs, targets, schedules[args.child], validate=False)
        return
    argv = sys.argv[1:]
    baseline = peak_rss_bytes(argv, "none")
    peaks = {name: peak_rss_bytes(argv, name) - baseline for name in schedules}
    cost = CostModel(workload_from_spec(spec), load_hardware_spec(args.hardware))
    times: dict[str, list[float]] = {name: [] for name in schedules}
    for schedule in schedules.values():  # untimed warm-up
        train_gradients(model, inputs, targets, schedule)
    for _ in range(args.repeats):
        for name, schedule in schedules.items():
            start = time.perf_counter()
            train_gradients(model, inputs, targets, schedule, validate=False)
            times[name].append(time.perf_counter() - start)
    rows = []
    for name, schedule in schedules.items():
        predicted = simulate_train(schedule, graph, cost, check=False)
        rows.append({
            "schedule": name, "steps": schedule.num_steps, "recomputed_cells": len(schedule.recomputed),
            "measured_s": statistics.median(times[name]), "measured_peak_rss_bytes": peaks[name],
            "predicted_s": predicted.makespan_s, "predicted_activation_bytes": float(predicted.held_bytes.max()),
        })
    print(f"{spec.name} x {args.segments} segments, batch {args.batch_size}, threads {torch.get_num_threads()}, "
          f"budget {budget} cells, simulator on {args.hardware}")
    print(f"{'schedule':<14}{'steps':>7}{'recomp':>8}{'measured':>11}{'+RSS MB':>10}{'predicted':>11}{'pred MB':>9}")
    for row in rows:
        print(f"{row['schedule']:<14}{row['steps']:>7}{row['recomputed_cells']:>8}{row['measured_s']:>10.3f}s"
              f"{row['measured_peak_rss_bytes'] / 1e6:>10.1f}{row['predicted_s']:>10.3f}s"
              f"{row['predicted_activation_bytes'] / 1e6:>9.1f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
