"""Backend benchmarks: diagonal vs sequential, executor overhead, streaming memory, kernel invariance survey.

Every speed figure is a ratio of medians measured side by side in one process by the backend's
``time_schedule``/``time_calls`` (repeats interleaved, so machine noise hits both sides alike); peak
memory is the peak RSS of fresh ``rmtsched run`` subprocesses.

    .venv/bin/python bench/bench_backend.py              # everything (about 10 minutes on 2 cores)
    .venv/bin/python bench/bench_backend.py --only speed --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys

import torch
import torch.nn.functional as F

from rmtsched.backends.torch import build_model, execute
from rmtsched.backends.torch.timing import time_calls, time_schedule
from rmtsched.sched import build_cell_graph, make_schedule, split_segments
from rmtsched.specs.model import ModelSpec, load_model_spec


def schedule_medians(spec: ModelSpec, segments: int, repeats: int, gemm: str = "auto") -> dict[str, float]:
    """Median seconds of the sequential and diagonal schedules over ``segments`` segments (prefix warm-up)."""
    model = build_model(spec, seed=0, matmul=gemm)
    inputs = torch.randint(0, spec.vocab_size, (1, segments * spec.segment_len), generator=torch.Generator())
    graph = build_cell_graph(spec.num_layers, segment_tokens=split_segments(inputs.shape[1], spec.segment_len))
    schedules = {name: make_schedule(graph, name) for name in ("sequential", "diagonal")}
    timings = time_schedule(model, inputs, schedules, repeat=repeats)
    return {name: timing.median_s for name, timing in timings.items()}


def bench_speed(repeats: int, segments: int, big_segments: int) -> dict[str, object]:
    small = load_model_spec("armt-small")
    big = small.replace(name="armt-small-d512", d_model=512, mlp_dim=2048)
    results: dict[str, object] = {}
    for label, spec, count in (("armt-small", small, segments), ("armt-small-d512", big, big_segments)):
        medians = schedule_medians(spec, count, repeats)
        ratio = medians["sequential"] / medians["diagonal"]
        results[label] = {"segments": count, **medians, "speedup": ratio}
        print(f"{label:16s} {count:4d} segments  sequential {medians['sequential']:7.3f} s  "
              f"diagonal {medians['diagonal']:7.3f} s  speedup {ratio:5.2f}x  (median of {repeats})")
    medians = schedule_medians(small, segments, repeats, gemm="rows")
    results["armt-small/rows"] = {"segments": segments, **medians,
                                  "speedup": medians["sequential"] / medians["diagonal"]}
    print(f"{'armt-small rows':16s} {segments:4d} segments  sequential {medians['sequential']:7.3f} s  "
          f"diagonal {medians['diagonal']:7.3f} s  speedup {results['armt-small/rows']['speedup']:5.2f}x  "
          "(per-row GEMMs only: the cost of never batching a GEMM)")
    return results


def bench_overhead(repeats: int, segments: int) -> dict[str, object]:
    """The executor's sequential path vs a hand-written loop over the same ``forward_layers``."""
    spec = load_model_spec("armt-small")
    model = build_model(spec, seed=0)
    inputs = torch.randint(0, spec.vocab_size, (1, segments * spec.segment_len), generator=torch.Generator())
    graph = build_cell_graph(spec.num_layers, segment_tokens=split_segments(inputs.shape[1], spec.segment_len))
    schedule = make_schedule(graph, "sequential")

    def hand_loop() -> None:
        with torch.inference_mode():
            state = model.init_state(1)
            for segment in range(graph.num_segments):
                start = segment * spec.segment_len
                hidden = model.segment_input(segment, inputs[:, start : start + spec.segment_len], None)[None]
                for layer in range(spec.num_layers):
                    hidden = model.forward_layers(hidden, range(layer, layer + 1), state)
                model.segment_output(hidden[0])

    runs = {"executor": lambda _: execute(model, inputs, schedule, collect_outputs=False),
            "hand_loop": lambda _: hand_loop()}
    for run in runs.values():
        run(0)
    medians = {name: timing.median_s for name, timing in time_calls(runs, repeat=repeats).items()}
    overhead = medians["executor"] / medians["hand_loop"] - 1
    print(f"executor sequential {medians['executor']:.3f} s vs hand-written loop {medians['hand_loop']:.3f} s: "
          f"overhead {100 * overhead:+.1f}% (armt-small, {segments} segments, median of {repeats})")
    return {"segments": segments, **medians, "overhead": overhead}


def peak_rss(seq_len: int) -> dict[str, object]:
    command = [sys.executable, "-m", "rmtsched", "run", "--model", "armt-tiny", "--seq-len", str(seq_len),
               "--schedule", "diagonal", "--json"]
    record = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    return {"seq_len": seq_len, "peak_rss_bytes": record["peak_memory_bytes"], "wall_s": record["wall_s"]}


def bench_memory(short: int, long: int) -> dict[str, object]:
    low, high = peak_rss(short), peak_rss(long)
    growth = high["peak_rss_bytes"] / low["peak_rss_bytes"] - 1
    print(f"armt-tiny diagonal peak RSS: {short} tokens {low['peak_rss_bytes'] / 2**20:.1f} MiB, "
          f"{long} tokens {high['peak_rss_bytes'] / 2**20:.1f} MiB ({100 * growth:+.1f}%, "
          f"{high['wall_s']:.1f} s for the long run)")
    return {"short": low, "long": high, "growth": growth}


def survey_invariance(trials: int) -> dict[str, int]:
    """How often raw library kernels break batch invariance here (why RowMatmul and our sigmoid exist)."""
    rng, generator = random.Random(0), torch.Generator().manual_seed(0)
    counts = {"torch.bmm": 0, "torch.sigmoid": 0, "F.silu": 0, "sdpa(stacked rows)": 0}
    for _ in range(trials):
        dtype = rng.choice((torch.float32, torch.float64))
        w = rng.choice((2, 3, 5, 8, 16))
        m, k, n = rng.randint(1, 300), rng.randint(1, 300), rng.randint(1, 300)
        a, b = torch.randn(w, m, k, generator=generator, dtype=dtype), torch.randn(w, k, n, generator=generator,
                                                                                    dtype=dtype)
        together = torch.bmm(a, b)
        counts["torch.bmm"] += any(not torch.equal(together[i], torch.bmm(a[i:i + 1], b[i:i + 1])[0])
                                   for i in range(w))
        x = torch.randn(w, rng.randint(1, 5000), generator=generator, dtype=dtype) * 4
        for name, fn in (("torch.sigmoid", torch.sigmoid), ("F.silu", F.silu)):
            y = fn(x)
            counts[name] += any(not torch.equal(y[i], fn(x[i])) for i in range(w))
        heads, tokens, dim = rng.randint(1, 4), rng.randint(1, 100), rng.choice((8, 16, 32))
        q, kk, v = (torch.randn(w, heads, tokens, dim, generator=generator, dtype=dtype) for _ in range(3))
        y = F.scaled_dot_product_attention(q, kk, v, is_causal=True)
        counts["sdpa(stacked rows)"] += any(
            not torch.equal(y[i], F.scaled_dot_product_attention(q[i:i + 1], kk[i:i + 1], v[i:i + 1],
                                                                  is_causal=True)[0]) for i in range(w))
    print(f"raw kernels not batch-invariant in {trials} random shape/dtype/width draws: "
          + ", ".join(f"{name} {count}" for name, count in counts.items()))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("speed", "overhead", "memory", "survey"), action="append")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--segments", type=int, default=128)
    parser.add_argument("--big-segments", type=int, default=24)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="also print all figures as one JSON line")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = args.only or ["speed", "overhead", "memory", "survey"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 on cpu, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at start")
    results: dict[str, object] = {}
    if "speed" in sections:
        results["speed"] = bench_speed(args.repeats, args.segments, args.big_segments)
    if "overhead" in sections:
        results["overhead"] = bench_overhead(args.repeats + 2, args.segments // 2)
    if "memory" in sections:
        results["memory"] = bench_memory(65_536, 1_048_576)
    if "survey" in sections:
        results["survey"] = survey_invariance(100)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at end")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
