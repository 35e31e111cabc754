"""CUDA benchmark: ARMT diagonal vs sequential vs full attention on one GPU, exact and batched, graphs on and off.

For each input length, every variant runs once untimed (warm-up: probes, Triton compiles, CUDA graph
captures; its outputs are kept for the checks), then ``--repeats`` timed runs, each ended by a device
sync (median reported); a variant's graphs are freed after it, so each peak counts its own buffers only:

  full-attention               the same LLaMA weights, no memory, causal SDPA over the input (one chunk
                               unless --fa-chunk), cuBLAS GEMMs: the paper's baseline
  sequential|diagonal/exact    RowMatmul "auto": the Triton grouped GEMM where Triton is present (else
                               cuBLAS where a probe proved it batch-invariant, rows looped elsewhere)
  sequential|diagonal/batched  RowMatmul "batched": one cuBLAS call per GEMM, not bit-exact across widths
  ...+graphs                   the same with every step shape captured once as a CUDA graph and replayed

It prints tokens/s and peak memory per variant; whether diagonal's outputs equal sequential's of the same
GEMM mode (exact: bit for bit) and graph runs equal eager runs; the ratios issue 13 sets targets for
(diagonal >= 3.3x faster than full attention and >= 1.8x faster than sequential at 131,072 tokens, exact
within 15% of batched); and the simulator's prediction on --hardware.

    python bench/bench_cuda.py [--model armt-llama-1b] [--seq-lens 32768,65536,131072] [--segment-len 1024]
        [--mem-tokens 128] [--dtype bf16] [--repeats 2] [--hardware h200] [--budget-s 420] [--json out.json]

Needs a CUDA device: without one it says so and exits 0 (a skip), unless --device cpu (a smoke test of
the script on a tiny model, graphs left out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass

import torch

from rmtsched.backends.torch import build_model, cuda_graphs, execute, grouped_gemm, rowmm
from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.full_attention import full_attention_forward
from rmtsched.backends.torch.models import parse_dtype
from rmtsched.backends.torch.timing import synchronize, time_calls
from rmtsched.errors import RunFailure
from rmtsched.fileio import atomic_write_text, check_writable
from rmtsched.sched import Schedule, graph_for_tokens, make_schedule
from rmtsched.sim.study import run_study
from rmtsched.specs.hardware import load_hardware_spec
from rmtsched.specs.model import ModelSpec, load_model_spec

FALLBACK_FA_CHUNK = 4096
TARGETS = {"diagonal_vs_full_attention": 3.3, "diagonal_vs_sequential": 1.8, "exact_over_batched": 1.15}


@dataclass(frozen=True)
class Variant:
    """One timed configuration: a schedule (or the full-attention baseline), a GEMM mode, graphs or not."""

    schedule: str  # "sequential", "diagonal" or "full-attention"
    gemm: str  # "exact" (RowMatmul "auto") or "batched"
    graphs: bool

    @property
    def name(self) -> str:
        if self.schedule == "full-attention":
            return self.schedule
        return f"{self.schedule}/{self.gemm}{'+graphs' if self.graphs else ''}"


# Most telling first, so a spent time budget drops the least: the baseline and the graph runs (the targets'
# numbers), then the eager runs (what graphs gain).
VARIANTS = (
    Variant("full-attention", "batched", False),
    *(Variant(schedule, gemm, graphs) for graphs in (True, False) for schedule in ("diagonal", "sequential")
      for gemm in ("exact", "batched")),
)


def run_variant(
    variant: Variant, models: dict[str, StackedModel], inputs: torch.Tensor, plans: dict[str, Schedule],
    repeats: int, fa_chunk: int,
) -> dict[str, object]:
    """One untimed warm-up run (probes, compiles, graph captures) whose outputs are kept on the host for the
    checks, then ``repeats`` timed runs; peak memory is that of the timed runs (weights included)."""
    model = models[variant.gemm]
    device = inputs.device
    outputs: list[torch.Tensor] = []

    def run(index: int) -> None:
        keep = (lambda _, out: outputs.append(out)) if index < 0 else None
        if variant.schedule == "full-attention":
            full_attention_forward(model, inputs, chunk_tokens=fa_chunk, on_output=keep)
        else:
            execute(model, inputs, plans[variant.schedule], validate=False, collect_outputs=False,
                    on_segment_output=keep, cuda_graphs=variant.graphs)

    run(-1)
    outputs = [out.cpu() for out in outputs]  # off the device, so they weigh on no later peak
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    timing = time_calls({variant.name: run}, repeat=repeats, device=device)[variant.name]
    record: dict[str, object] = {"variant": variant.name, "runs_s": list(timing.runs_s), "median_s": timing.median_s,
                                 "tokens_per_s": int(inputs.shape[1]) / timing.median_s}
    if device.type == "cuda":
        record["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    if variant.graphs:
        graphs = cuda_graphs.graphs_for(model, int(inputs.shape[0]))
        record["graphs"] = {"captured": graphs.captured, "replays": graphs.replays}
        cuda_graphs.release(model)  # free its buffers before the next variant's peak is measured
        torch.cuda.empty_cache()
    record["outputs"] = outputs  # dropped once the checks have used them
    return record


def run_with_fallback(
    variant: Variant, models: dict[str, StackedModel], inputs: torch.Tensor, plans: dict[str, Schedule],
    repeats: int, fa_chunk: int,
) -> dict[str, object]:
    """``run_variant``; full attention in one pass (``fa_chunk`` 0) falls back to chunks if that runs out of
    memory: one pass needs flash attention, and where SDPA takes a kernel that stores all N x N scores
    instead, a chunked prefill (chunk x N scores) still fits."""
    chunk = fa_chunk or int(inputs.shape[1])
    try:
        record = run_variant(variant, models, inputs, plans, repeats, chunk)
    except torch.cuda.OutOfMemoryError as error:
        if variant.schedule != "full-attention" or fa_chunk:
            raise
        print(f"{inputs.shape[1]:>7} {variant.name:26s} one pass: {str(error).splitlines()[0]}; chunks of "
              f"{FALLBACK_FA_CHUNK} tokens instead", flush=True)
        torch.cuda.empty_cache()
        chunk = FALLBACK_FA_CHUNK
        record = run_variant(variant, models, inputs, plans, repeats, chunk)
    if variant.schedule == "full-attention":
        record["fa_chunk_tokens"] = chunk
    return record


def compare(reference: list[torch.Tensor], outputs: list[torch.Tensor]) -> dict[str, object]:
    """Bit identity and the largest absolute difference between two runs' outputs."""
    identical = len(reference) == len(outputs) and all(torch.equal(a, b) for a, b in zip(reference, outputs,
                                                                                           strict=True))
    diff = max(((a.float() - b.float()).abs().max().item() for a, b in zip(reference, outputs, strict=True)),
               default=float("nan"))
    return {"bit_identical": identical, "max_abs_diff": diff}


def checks(records: dict[str, dict[str, object]]) -> None:
    """Add each variant's output checks: diagonal vs a sequential run of its GEMM mode (graphs as its own
    where that ran), graph runs vs the eager run of the same schedule and mode."""
    have = {name: record for name, record in records.items() if "outputs" in record}
    for name, record in have.items():
        if name == "full-attention":
            continue
        schedule, rest = name.split("/")
        gemm = rest.removesuffix("+graphs")
        if rest != gemm and f"{schedule}/{gemm}" in have:
            record["vs_eager"] = compare(have[f"{schedule}/{gemm}"]["outputs"], record["outputs"])
        candidates = [f"sequential/{rest}", f"sequential/{gemm}", f"sequential/{gemm}+graphs"]
        reference = next((have[n] for n in candidates if n in have), None)
        if schedule == "diagonal" and reference is not None:
            record["vs_sequential"] = {"reference": reference["variant"],
                                       **compare(reference["outputs"], record["outputs"])}


def ratios(records: dict[str, dict[str, object]]) -> dict[str, float]:
    """Speed-ups from the medians: best exact diagonal vs full attention and vs the best sequential run;
    exact over batched diagonal with graphs as they compare best (>1 means exact is slower)."""
    median = {name: r["median_s"] for name, r in records.items() if "median_s" in r}

    def best(*names: str) -> float | None:
        found = [median[n] for n in names if n in median]
        return min(found) if found else None

    diagonal = best("diagonal/exact+graphs", "diagonal/exact")
    sequential = best("sequential/exact+graphs", "sequential/exact", "sequential/batched+graphs", "sequential/batched")
    out: dict[str, float] = {}
    if diagonal and "full-attention" in median:
        out["diagonal_vs_full_attention"] = median["full-attention"] / diagonal
    if diagonal and sequential:
        out["diagonal_vs_sequential"] = sequential / diagonal
    for suffix in ("+graphs", ""):
        exact, batched = median.get(f"diagonal/exact{suffix}"), median.get(f"diagonal/batched{suffix}")
        if exact and batched:
            out[f"exact_over_batched{suffix.replace('+', '_')}"] = exact / batched
    return out


def predicted(spec: ModelSpec, hardware: str, seq_len: int) -> dict[str, float]:
    study = run_study(spec, load_hardware_spec(hardware), seq_len, (("sequential", 1), ("diagonal", 1)))
    return {**{name: study.run(name).result.makespan_s for name in ("sequential", "diagonal")},
            "full-attention": study.full_attention.result.makespan_s}


def bench_length(
    spec: ModelSpec, models: dict[str, StackedModel], seq_len: int, variants: list[Variant], args: argparse.Namespace,
    deadline: float,
) -> dict[str, object]:
    device = models["exact"].device
    generator = torch.Generator().manual_seed(seq_len)
    inputs = torch.randint(0, spec.vocab_size, (1, seq_len), generator=generator).to(device)
    graph = graph_for_tokens(spec, seq_len)
    plans = {name: make_schedule(graph, name) for name in ("sequential", "diagonal")}
    records: dict[str, dict[str, object]] = {}
    for variant in variants:
        if time.monotonic() > deadline:
            records[variant.name] = {"variant": variant.name, "skipped": "time budget spent"}
            print(f"{seq_len:>7} {variant.name:26s} skipped: time budget spent", flush=True)
            continue
        try:
            record = run_with_fallback(variant, models, inputs, plans, args.repeats, args.fa_chunk)
        except (torch.cuda.OutOfMemoryError, RunFailure) as error:
            record = {"variant": variant.name, "error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
            cuda_graphs.release(models[variant.gemm])
            if device.type == "cuda":
                torch.cuda.empty_cache()
        records[variant.name] = record
        print(_line(seq_len, record), flush=True)
    checks(records)
    for name, record in records.items():
        for key in ("vs_sequential", "vs_eager"):
            if key in record:
                print(f"{seq_len:>7} {name:26s} {key}: bit-identical {record[key]['bit_identical']}, "
                      f"max |diff| {record[key]['max_abs_diff']:.3g}", flush=True)
        record.pop("outputs", None)
    result = {"seq_len": seq_len, "cells": graph.num_cells, "variants": list(records.values()),
              "ratios": ratios(records), "predicted_s": predicted(spec, args.hardware, seq_len),
              "plans": dict(Counter(rowmm._plans.values()))}
    for key, value in result["ratios"].items():
        target = TARGETS.get(key.removesuffix("_graphs"))
        verdict = "" if target is None else f"  (target {'<=' if key.startswith('exact') else '>='} {target})"
        print(f"{seq_len:>7} {key:36s} {value:6.2f}x{verdict}", flush=True)
    guess = result["predicted_s"]
    print(f"{seq_len:>7} simulated on {args.hardware}: sequential {guess['sequential']:.3f} s, diagonal "
          f"{guess['diagonal']:.3f} s, full attention {guess['full-attention']:.3f} s", flush=True)
    return result


def _line(seq_len: int, record: dict[str, object]) -> str:
    if "error" in record:
        return f"{seq_len:>7} {record['variant']:26s} {record['error']}"
    peak = record.get("peak_memory_bytes")
    memory = f"  peak {peak / 2**30:7.2f} GiB" if peak is not None else ""
    return (f"{seq_len:>7} {record['variant']:26s} {record['median_s'] * 1e3:10.1f} ms "
            f"{record['tokens_per_s']:>12,.0f} tokens/s{memory}")


def build_models(spec: ModelSpec, dtype: torch.dtype, device: torch.device) -> dict[str, StackedModel]:
    """One weight set, two models: RowMatmul "auto" (exact) and "batched". Separate objects keep separate
    CUDA graph caches: a graph holds the kernels chosen when it was captured."""
    exact = build_model(spec, seed=0, dtype=dtype, device=device, matmul="auto")
    batched = build_model(spec, dtype=dtype, device=device, params=exact.params, matmul="batched")
    return {"exact": exact, "batched": batched}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="armt-llama-1b")
    parser.add_argument("--seq-lens", default="32768,65536,131072")
    parser.add_argument("--segment-len", type=int, default=1024, help="T (default 1024)")
    parser.add_argument("--mem-tokens", type=int, default=128, help="M (default 128)")
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", default=",".join(v.name for v in VARIANTS), help="comma-separated subset")
    parser.add_argument("--fa-chunk", type=int, default=0, help="full-attention chunk tokens (0: the whole input)")
    parser.add_argument("--hardware", default="h200", help="hardware spec for the simulator's prediction")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no variant after this many seconds")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu to smoke-test the script on a tiny model")
    parser.add_argument("--json", help="write the records here (rewritten after each length)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_cuda.py: skipped, torch sees no CUDA device (use --device cpu to smoke-test it)")
        return 0
    if args.json:
        check_writable(args.json, "--json file")
    by_name = {v.name: v for v in VARIANTS}
    unknown = [n for n in args.variants.split(",") if n not in by_name]
    if unknown:
        parser.error(f"unknown variants {unknown}: expected names from {list(by_name)}")
    variants = [by_name[n] for n in args.variants.split(",") if device.type == "cuda" or not by_name[n].graphs]
    dtype = parse_dtype(args.dtype)
    spec = load_model_spec(args.model).replace(segment_len=args.segment_len, mem_tokens=args.mem_tokens,
                                               dtype_bytes=dtype.itemsize)
    started = time.monotonic()
    models = build_models(spec, dtype, device)
    header = {"model": args.model, "segment_len": spec.segment_len, "mem_tokens": spec.mem_tokens,
              "dtype": args.dtype, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "grouped_gemm": device.type == "cuda" and grouped_gemm.available(),
              "repeats": args.repeats, "build_s": time.monotonic() - started}
    print(json.dumps(header), flush=True)
    results = []
    for seq_len in (int(n) for n in args.seq_lens.split(",")):
        results.append(bench_length(spec, models, seq_len, variants, args, started + args.budget_s))
        if args.json:
            atomic_write_text(args.json, json.dumps({**header, "lengths": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
