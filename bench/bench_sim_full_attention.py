"""The full-attention baseline as the simulator costs it: FLOPs, attention's share, rates, KV cache vs ARMT state.

    PYTHONPATH=. .venv/bin/python bench/bench_sim_full_attention.py [--model armt-llama-1b] [--hardware a100-80gb]

For N = 4k-131k tokens: the baseline LLaMA's FLOPs (causal attention counts N (N + 1) / 2 pairs), its
predicted time, attention's share of it and attention's effective rate (flash-style, wave-quantised), and
the state each model keeps after reading the input: full attention's KV cache against ARMT's A_l, z_l.
Predictions, not measurements.
"""

from __future__ import annotations

import argparse

from rmtsched.sim import CostModel
from rmtsched.sim.study import full_attention, run_study, schedules_for
from rmtsched.sim.workload import full_attention_workload
from rmtsched.specs.armt_cost import total_flops
from rmtsched.specs.hardware import load_hardware_spec
from rmtsched.specs.model import load_model_spec

LENGTHS = (4096, 8192, 16384, 32768, 65536, 131072)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="armt-llama-1b")
    parser.add_argument("--hardware", default="a100-80gb")
    parser.add_argument("--runtime", default="eager")
    parser.add_argument("--segment-len", type=int, default=1024)
    parser.add_argument("--mem-tokens", type=int, default=128)
    args = parser.parse_args()
    spec = load_model_spec(args.model).replace(segment_len=args.segment_len, mem_tokens=args.mem_tokens)
    hardware = load_hardware_spec(args.hardware).with_runtime(args.runtime)
    print(f"{spec.name} (T = {spec.segment_len}, M = {spec.mem_tokens}) on {hardware.name} ({hardware.runtime})\n")
    print("| tokens | full-attn TFLOP | full attention | attention share | attention TFLOP/s | diagonal ARMT | "
          "KV cache | ARMT state |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in LENGTHS:
        cost = CostModel(full_attention_workload(spec, n), hardware)
        kernels = {k.name: k for _, k in cost.kernels(n)}
        attention = kernels["attention"]
        attention_s = cost.kernel_time_s(attention.flops, attention.activation_bytes, True, "attention",
                                         tiles=attention.tiles, useful_fraction=attention.useful_fraction)
        layer_s = cost.cell_time_s(n)
        baseline = full_attention(spec, hardware, n).result.makespan_s
        study = run_study(spec, hardware, n, schedules_for("diagonal", 1), engine="analytic")
        print(
            f"| {n:,} | {spec.num_layers * total_flops(list(kernels.values())) / 1e12:.1f} | {baseline:.3f} s | "
            f"{100 * attention_s / layer_s:.0f}% | {attention.flops / attention_s / 1e12:.0f} | "
            f"{study.runs[0].result.makespan_s:.3f} s | {study.kv_cache_bytes / 1e9:.2f} GB | "
            f"{study.memory_state_bytes / 1e6:.1f} MB |"
        )


if __name__ == "__main__":
    main()
