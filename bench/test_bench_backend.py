"""The paired backend speed benchmarks as pytest-benchmark tests (``bench_backend.py`` keeps memory and survey).

    pytest bench/ --benchmark-only --benchmark-json bench.json [--bench-segments 128 --bench-rounds 5]

Each benchmark times one *round*: every side of the comparison once, the starting side rotating, so the
ratios in ``extra_info`` (medians of the rounds, computed in this one run) see the same machine. Nothing
here asserts a target: a shared machine's load decides the figures; bench/README.md says what each
target is and records the load with the figures (``extra_info["load_average"]``).
"""

from __future__ import annotations

import pytest
import torch
from perf_common import PairedRounds, armt_flops, gemm_call, load_average, schedule_calls

from rmtsched.backends.torch import build_model, execute
from rmtsched.sched import graph_for_tokens, make_schedule
from rmtsched.specs.model import load_model_spec

SMALL = load_model_spec("armt-small")
BIG = SMALL.replace(name="armt-small-d512", d_model=512, mlp_dim=2048)  # compute-bound: GEMMs dominate


def run_rounds(benchmark, rounds: PairedRounds, count: int) -> None:
    benchmark.pedantic(rounds.round, rounds=count, iterations=1, warmup_rounds=0)
    benchmark.extra_info["load_average_end"] = load_average()
    benchmark.extra_info["threads"] = torch.get_num_threads()
    for name in rounds.calls:
        benchmark.extra_info[f"{name}_s"] = rounds.median(name)


@pytest.mark.benchmark(group="diagonal-vs-sequential")
def test_armt_small_diagonal_vs_sequential_and_gemm_rate(benchmark, bench_options) -> None:
    """Diagonal over sequential on ``armt-small``, and diagonal's FLOP/s over a large GEMM's (efficiency)."""
    tokens = bench_options["segments"] * SMALL.segment_len
    gemm, gemm_flops = gemm_call()
    rounds = PairedRounds({**schedule_calls(SMALL, tokens), "gemm": gemm})
    benchmark.extra_info.update(model=SMALL.name, tokens=tokens, load_average_start=load_average())
    run_rounds(benchmark, rounds, bench_options["rounds"])
    flops, info = armt_flops(SMALL, tokens), benchmark.extra_info
    info["gemm_flops_per_s"] = gemm_flops / info["gemm_s"]
    for name in ("sequential", "diagonal"):
        info[f"{name}_flops_per_s"] = flops / info[f"{name}_s"]
        info[f"{name}_efficiency"] = info[f"{name}_flops_per_s"] / info["gemm_flops_per_s"]
    info["speedup"] = info["sequential_s"] / info["diagonal_s"]


@pytest.mark.benchmark(group="diagonal-vs-sequential")
def test_compute_bound_d512_diagonal_vs_sequential(benchmark, bench_options) -> None:
    tokens = bench_options["big_segments"] * BIG.segment_len
    rounds = PairedRounds(schedule_calls(BIG, tokens))
    benchmark.extra_info.update(model=BIG.name, tokens=tokens, load_average_start=load_average())
    run_rounds(benchmark, rounds, bench_options["rounds"])
    benchmark.extra_info["speedup"] = benchmark.extra_info["sequential_s"] / benchmark.extra_info["diagonal_s"]


@pytest.mark.benchmark(group="diagonal-vs-sequential")
def test_per_row_gemms_diagonal_vs_sequential(benchmark, bench_options) -> None:
    """``--gemm rows`` (never one batched GEMM): what exactness would cost without the batch-invariance probes."""
    tokens = bench_options["segments"] * SMALL.segment_len
    rounds = PairedRounds(schedule_calls(SMALL, tokens, gemm="rows"))
    benchmark.extra_info.update(model=SMALL.name, gemm="rows", tokens=tokens, load_average_start=load_average())
    run_rounds(benchmark, rounds, bench_options["rounds"])
    benchmark.extra_info["speedup"] = benchmark.extra_info["sequential_s"] / benchmark.extra_info["diagonal_s"]


@pytest.mark.benchmark(group="executor-overhead")
def test_executor_sequential_vs_hand_written_loop(benchmark, bench_options) -> None:
    """The executor's sequential path against a plain loop over the same ``forward_layers`` (target <= 5%)."""
    spec, segments = SMALL, max(1, bench_options["segments"] // 2)
    model = build_model(spec, seed=0)
    inputs = torch.randint(0, spec.vocab_size, (1, segments * spec.segment_len), generator=torch.Generator())
    schedule = make_schedule(graph_for_tokens(spec, inputs.shape[1]), "sequential")

    def hand_loop() -> None:
        with torch.inference_mode():
            state = model.init_state(1)
            for segment in range(segments):
                start = segment * spec.segment_len
                hidden = model.segment_input(segment, inputs[:, start : start + spec.segment_len], None)[None]
                for layer in range(spec.num_layers):
                    hidden = model.forward_layers(hidden, range(layer, layer + 1), state)
                model.segment_output(hidden[0])

    rounds = PairedRounds({"executor": lambda: execute(model, inputs, schedule, collect_outputs=False),
                           "hand_loop": hand_loop})
    rounds.round()  # warm-up (probes), discarded
    rounds.runs = {name: [] for name in rounds.calls}
    benchmark.extra_info.update(model=spec.name, tokens=int(inputs.shape[1]), load_average_start=load_average())
    run_rounds(benchmark, rounds, bench_options["rounds"])
    benchmark.extra_info["overhead"] = benchmark.extra_info["executor_s"] / benchmark.extra_info["hand_loop_s"] - 1
