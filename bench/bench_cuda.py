"""CUDA benchmark: diagonal vs sequential on a GPU, with each GEMM mode, against the simulator's prediction.

For each model, runs the sequential and the diagonal schedule in both row-GEMM modes ("auto": batched only
where a probe proved the batched call bit-identical to per-row calls; "batched": always one grouped call),
each run ending in a device sync (the backend's ``time_schedule``: repeats interleaved, medians). Prints the
measured speedup, the largest output difference against the sequential run of the same mode, how RowMatmul's
probes decided (batched or per-row call layouts), and the speedup the simulator predicts on a preset.

    python3 bench/bench_cuda.py [--models armt-small,armt-llama-160m] [--seq-len N] [--dtype bf16]
                                [--hardware h100-sxm] [--repeats 3]

Needs a CUDA device; on a machine without one it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

import torch

from rmtsched.backends.torch import build_model, execute, rowmm
from rmtsched.backends.torch.models import parse_dtype
from rmtsched.backends.torch.timing import synchronize, time_schedule
from rmtsched.sched import graph_for_tokens, make_schedule
from rmtsched.sim import CostModel, simulate, workload_from_spec
from rmtsched.specs.hardware import load_hardware_spec
from rmtsched.specs.model import load_model_spec

SCHEDULES = ("sequential", "diagonal")


def bench_model(
    name: str, seq_len: int, dtype_name: str, hardware: str, repeats: int, device: torch.device
) -> dict[str, object]:
    spec = load_model_spec(name)
    dtype = parse_dtype(dtype_name)
    spec = spec.replace(dtype_bytes=dtype.itemsize)
    graph = graph_for_tokens(spec, seq_len)
    plans = {s: make_schedule(graph, s) for s in SCHEDULES}
    cost = CostModel(workload_from_spec(spec), load_hardware_spec(hardware))
    predicted = {s: simulate(plans[s], graph, cost).makespan_s for s in SCHEDULES}
    inputs = torch.randint(0, spec.vocab_size, (1, seq_len), generator=torch.Generator().manual_seed(0)).to(device)
    record: dict[str, object] = {"model": name, "seq_len": seq_len, "dtype": dtype_name,
                                 "cells": graph.num_cells, "predicted_s": predicted,
                                 "predicted_speedup": predicted["sequential"] / predicted["diagonal"]}
    for gemm in ("auto", "batched"):
        rowmm._plans.clear()
        model = build_model(spec, seed=0, dtype=dtype, device=device, matmul=gemm)
        outputs = {s: execute(model, inputs, plans[s]).outputs for s in SCHEDULES}  # warm-up + outputs
        diff = max((a.float() - b.float()).abs().max().item()
                   for a, b in zip(outputs["sequential"], outputs["diagonal"], strict=True))
        bitwise = all(torch.equal(a, b) for a, b in zip(outputs["sequential"], outputs["diagonal"], strict=True))
        synchronize(device)
        timings = time_schedule(model, inputs, plans, repeat=repeats, warmup=False)  # warmed up just above
        medians = {s: timing.median_s for s, timing in timings.items()}
        record[gemm] = {"measured_s": medians, "speedup": medians["sequential"] / medians["diagonal"],
                        "max_abs_diff": diff, "bit_identical": bitwise,
                        "plans": dict(Counter(rowmm._plans.values()))}
        print(f"{name:16s} {dtype_name} gemm={gemm:7s} seq {medians['sequential'] * 1e3:9.1f} ms  "
              f"diag {medians['diagonal'] * 1e3:9.1f} ms  speedup {record[gemm]['speedup']:5.2f}x  "
              f"max|diff| {diff:.2e} bit-identical {bitwise}  plans {record[gemm]['plans']}", flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"{name:16s} simulated on {hardware}: seq {predicted['sequential'] * 1e3:.1f} ms  "
          f"diag {predicted['diagonal'] * 1e3:.1f} ms  speedup {record['predicted_speedup']:.2f}x", flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="armt-small,armt-llama-160m")
    parser.add_argument("--seq-len", type=int, default=16384)
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--hardware", default="h100-sxm")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda", help="cuda, or cpu to try the script on a small model")
    parser.add_argument("--json", help="write all records here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("bench_cuda.py needs a CUDA device; torch sees none", file=sys.stderr)
            return 2
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    records = [bench_model(m, args.seq_len, args.dtype, args.hardware, args.repeats, device)
               for m in args.models.split(",")]
    if args.json:
        with open(args.json, "w") as out:
            json.dump(records, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
