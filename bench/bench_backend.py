"""Backend studies: streaming memory and the kernel invariance survey.

The paired speed benchmarks (diagonal vs sequential, the GEMM-rate efficiency, executor overhead) are
pytest-benchmark tests now: ``pytest bench/ --benchmark-only`` (bench/test_bench_backend.py). Peak memory
here is the peak RSS of fresh ``rmtsched run`` subprocesses.

    .venv/bin/python bench/bench_backend.py              # both (a minute or two on 2 cores)
    .venv/bin/python bench/bench_backend.py --only survey
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
    parser.add_argument("--only", choices=("memory", "survey"), action="append")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="also print all figures as one JSON line")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = args.only or ["memory", "survey"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 on cpu, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at start")
    results: dict[str, object] = {}
    if "memory" in sections:
        results["memory"] = bench_memory(65_536, 1_048_576)
    if "survey" in sections:
        results["survey"] = survey_invariance(100)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at end")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
