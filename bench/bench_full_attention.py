"""Full attention vs sequential vs diagonal ARMT on this CPU, measured, with the simulator's prediction beside each.

    PYTHONPATH=. .venv/bin/python bench/bench_full_attention.py [--hardware hw.json] [--threads 1]
        [--lengths 4096 8192 ...]

For each length N (default 4k-64k tokens, ``armt-small`` sizes, fp32, torch's intra-op threads): one timed
run of the full-attention baseline (``full_attention_forward``: the same LLaMA layers without memory, causal
over all N tokens, chunked prefill through a KV cache), of the sequential and of the diagonal ARMT schedule
(each warmed up first on a short input), and one timed large GEMM, all in this process. Printed per run:
wall time, achieved FLOP/s (the cost model's FLOPs, ``rmtsched.specs.armt_cost``) and its fraction of the
GEMM rate, and the simulator's prediction (``run_study``, analytic engine) on ``--hardware`` (a calibrated
spec from ``rmtsched calibrate --out hw.json``, or the ``cpu-generic`` preset). Then the crossover length:
the shortest N at which diagonal ARMT beats full attention, measured (among the lengths run) and predicted
(on a power-of-two grid). Long: about 8 minutes on the idle 2-core machine, mostly full attention at 64k.
"""

from __future__ import annotations

import argparse
import time

import torch
from perf_common import armt_flops, full_attention_flops, gemm_call, load_average

from rmtsched.backends.torch import build_model, execute
from rmtsched.backends.torch.full_attention import full_attention_forward
from rmtsched.backends.torch.timing import warm_up
from rmtsched.sched import graph_for_tokens, make_schedule
from rmtsched.sim.study import run_study
from rmtsched.specs.hardware import load_hardware_spec
from rmtsched.specs.model import ModelSpec, load_model_spec

LENGTHS = (4096, 8192, 16384, 32768, 65536)
RUNS = ("full-attention", "sequential", "diagonal")


def measure(model, spec: ModelSpec, num_tokens: int) -> dict[str, float]:
    """Seconds of one run of each of ``RUNS`` on ``num_tokens`` random ids (warm-ups untimed)."""
    inputs = torch.randint(0, spec.vocab_size, (1, num_tokens), generator=torch.Generator().manual_seed(0))
    graph = graph_for_tokens(spec, num_tokens)
    seconds = {"full-attention": full_attention_forward(model, inputs).wall_s}
    for name in ("sequential", "diagonal"):
        schedule = make_schedule(graph, name)
        warm_up(model, inputs, schedule)
        start = time.perf_counter()
        execute(model, inputs, schedule, validate=False, collect_outputs=False)
        seconds[name] = time.perf_counter() - start
    return seconds


def predict(spec: ModelSpec, hardware, num_tokens: int) -> dict[str, float]:
    study = run_study(spec, hardware, num_tokens, (("sequential", 1), ("diagonal", 1)), engine="analytic")
    return {"full-attention": study.full_attention.result.makespan_s,
            **{run.schedule: run.result.makespan_s for run in study.runs}}


def predicted_crossover(spec: ModelSpec, hardware, longest: int) -> int | None:
    """The shortest power-of-two length (from one segment up to ``longest``) where diagonal is predicted faster."""
    n = spec.segment_len
    while n <= longest:
        times = predict(spec, hardware, n)
        if times["diagonal"] < times["full-attention"]:
            return n
        n *= 2
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="armt-small")
    parser.add_argument("--hardware", default="cpu-generic", help="preset name or calibrated JSON spec")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = load_model_spec(args.model)
    hardware = load_hardware_spec(args.hardware)
    model = build_model(spec, seed=0)
    full_attention_forward(model, torch.zeros(1, 2 * spec.segment_len, dtype=torch.long))  # warm-up
    gemm, gemm_flops = gemm_call()
    print(f"{spec.name}, fp32, torch {torch.__version__}, {torch.get_num_threads()} threads; predictions: "
          f"{args.hardware}; load average {load_average()} at start\n")
    print("| tokens | large GEMM | full attention | sequential | diagonal | diagonal vs full attention | "
          "diagonal vs sequential |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    crossover = None
    for n in args.lengths:
        start = time.perf_counter()
        gemm()
        rate = gemm_flops / (time.perf_counter() - start)
        measured, predicted = measure(model, spec, n), predict(spec, hardware, n)
        flops = {"full-attention": full_attention_flops(spec, n), "sequential": armt_flops(spec, n),
                 "diagonal": armt_flops(spec, n)}
        cells = [
            f"{measured[name]:.2f} s ({flops[name] / measured[name] / 1e9:.1f} GFLOP/s, "
            f"{flops[name] / measured[name] / rate:.0%}); pred. {predicted[name]:.2f} s"
            for name in RUNS
        ]
        vs_full = measured["full-attention"] / measured["diagonal"]
        vs_seq = measured["sequential"] / measured["diagonal"]
        if crossover is None and vs_full > 1:
            crossover = n
        print(f"| {n:,} | {rate / 1e9:.1f} GFLOP/s | {' | '.join(cells)} | {vs_full:.2f}x (pred. "
              f"{predicted['full-attention'] / predicted['diagonal']:.2f}x) | {vs_seq:.2f}x (pred. "
              f"{predicted['sequential'] / predicted['diagonal']:.2f}x) |", flush=True)
    shortest = f"{crossover:,} tokens" if crossover is not None else "none of the lengths run"
    predicted_n = predicted_crossover(spec, hardware, max(args.lengths) * 4)
    print(f"\ncrossover (diagonal faster than full attention): measured at {shortest} (first length run), "
          f"predicted at {f'{predicted_n:,} tokens' if predicted_n else 'no length'} (power-of-two grid)")
    print(f"load average {load_average()} at end")


if __name__ == "__main__":
    main()
