"""Pipelined ARMT on P local processes against the single-process sequential run on the same cores.

Issue 5's target on the 2-core machine: ARMT with 8 layers, d_model 128, T = 64, M = 16, 64 segments,
fp32; P = 2 processes with one intra-op thread each at least 1.2x faster than one process with two
threads running the sequential schedule (median ratio over rounds in one run). Each round runs the
sequential baseline in this process (and, for context, the same with one thread), then the pipelined
run (a fresh launch whose second repeat is timed, so first-call costs stay out). Printed beside the
measurement: the bubble fraction (measured and closed-form) and the simulator's prediction for the same
schedules on the ``cpu-generic`` preset.

    .venv/bin/python bench/bench_distributed.py [--layers 8] [--segments 64] [--procs 2] [--rounds 5]
                                                [--threads 2] [--hardware cpu-generic] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time

import torch

from rmtsched.backends.distributed import run_pipelined
from rmtsched.backends.torch import build_model, execute
from rmtsched.sched import CellGraph, build_cell_graph, make_schedule, split_segments
from rmtsched.sim import CostModel, simulate, workload_from_spec
from rmtsched.specs.hardware import load_hardware_spec
from rmtsched.specs.model import ModelSpec, load_model_spec


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="armt-small", help="base spec; layers/T/M below override it")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--segment-len", type=int, default=64)
    parser.add_argument("--mem-tokens", type=int, default=16)
    parser.add_argument("--segments", type=int, default=64)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of the single-process baseline")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hardware", default="cpu-generic", help="hardware spec for the simulator's prediction")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


def sequential_seconds(model, inputs: torch.Tensor, graph: CellGraph, threads: int) -> float:
    torch.set_num_threads(threads)
    schedule = make_schedule(graph, "sequential")
    start = time.perf_counter()
    execute(model, inputs, schedule, validate=False, collect_outputs=False)
    return time.perf_counter() - start


def predict(spec: ModelSpec, graph: CellGraph, procs: int, hardware: str) -> dict[str, object]:
    """The simulator on the same graph: sequential on one device, pipelined on ``procs`` devices."""
    cost = CostModel(workload_from_spec(spec), load_hardware_spec(hardware))
    sequential = simulate(make_schedule(graph, "sequential"), graph, cost)
    pipelined = simulate(make_schedule(graph, "pipelined", num_devices=procs), graph, cost)
    return {
        "hardware": hardware,
        "speedup": sequential.makespan_s / pipelined.makespan_s,
        "sequential_s": sequential.makespan_s,
        "pipelined_s": pipelined.makespan_s,
        "bubble_fraction": pipelined.bubble_fraction,
        "busy_s": list(pipelined.busy_s),
    }


def main() -> None:
    args = parse_args()
    spec = load_model_spec(args.model).replace(
        num_layers=args.layers, segment_len=args.segment_len, mem_tokens=args.mem_tokens
    )
    num_tokens = args.segments * spec.segment_len
    inputs = torch.randint(spec.vocab_size, (1, num_tokens), generator=torch.Generator().manual_seed(0))
    graph = build_cell_graph(
        spec.num_layers, segment_tokens=split_segments(num_tokens, spec.segment_len), rule=spec.dependency_rule
    )
    factory = functools.partial(build_model, spec, seed=0, dtype=torch.float32)
    model = factory(device="cpu")
    sequential_seconds(model, inputs, graph, args.threads)  # warm-up: allocator, rotary tables
    run_pipelined(factory, inputs, num_procs=args.procs, layout=spec, threads_per_proc=1)  # warm-up: forkserver

    rounds = []
    for index in range(args.rounds):
        seq_s = sequential_seconds(model, inputs, graph, args.threads)
        seq1_s = sequential_seconds(model, inputs, graph, 1)
        result = run_pipelined(factory, inputs, num_procs=args.procs, layout=spec, threads_per_proc=1, repeat=2)
        pipe_s = result.wall_s_runs[-1]
        rounds.append(
            {"sequential_s": seq_s, "sequential_1t_s": seq1_s, "pipelined_s": pipe_s, "ratio": seq_s / pipe_s,
             "ratio_1t": seq1_s / pipe_s, "result": result}
        )  # fmt: skip
        print(f"round {index}: sequential ({args.threads} threads) {seq_s:.3f} s, sequential (1 thread) "
              f"{seq1_s:.3f} s, pipelined ({args.procs} x 1 thread) {pipe_s:.3f} s, ratio {seq_s / pipe_s:.2f}x "
              f"(vs 1 thread {seq1_s / pipe_s:.2f}x), load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip

    ratios = [r["ratio"] for r in rounds]
    middle = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]["result"]
    prediction = predict(spec, graph, args.procs, args.hardware)
    report = {
        "model": spec.name,
        "layers": spec.num_layers,
        "d_model": spec.d_model,
        "segment_len": spec.segment_len,
        "mem_tokens": spec.mem_tokens,
        "segments": args.segments,
        "procs": args.procs,
        "median_sequential_s": statistics.median(r["sequential_s"] for r in rounds),
        "median_sequential_1t_s": statistics.median(r["sequential_1t_s"] for r in rounds),
        "median_pipelined_s": statistics.median(r["pipelined_s"] for r in rounds),
        "median_ratio_vs_1_thread": statistics.median(r["ratio_1t"] for r in rounds),
        "median_ratio": statistics.median(ratios),
        "min_ratio": min(ratios),
        "max_ratio": max(ratios),
        "bubble_fraction": middle.bubble_fraction,
        "ideal_bubble_fraction": middle.ideal_bubble_fraction,
        "rank_busy_s": [rank.busy_s for rank in middle.ranks],
        "rank_wait_s": [rank.wait_s for rank in middle.ranks],
        "simulated": prediction,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"\nmedian ratio {report['median_ratio']:.2f}x (min {report['min_ratio']:.2f}, max {report['max_ratio']:.2f}) "
        f"over {args.rounds} rounds; target >= 1.2x (against one thread: {report['median_ratio_vs_1_thread']:.2f}x)\n"
        f"bubble fraction: measured {report['bubble_fraction']:.3f} (1 - busy / (P x makespan), median round), "
        f"closed form {report['ideal_bubble_fraction']:.3f}, simulated {prediction['bubble_fraction']:.3f}\n"
        f"per-rank busy s: measured {[round(b, 3) for b in report['rank_busy_s']]}, "
        f"simulated {[round(b, 3) for b in prediction['busy_s']]}\n"
        f"simulator ({args.hardware}): sequential {prediction['sequential_s']:.3f} s, pipelined "
        f"{prediction['pipelined_s']:.3f} s, predicted speedup {prediction['speedup']:.2f}x "
        "(one device per process, each as fast as the single device)"
    )


if __name__ == "__main__":
    main()
