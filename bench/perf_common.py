"""What the speed benchmarks share: paired rounds, the machine's large-GEMM rate, and runs' FLOPs.

Every speed target is a ratio measured side by side in one process: ``PairedRounds`` runs each of its calls
once per round, the starting call rotating round by round, so a slow spell of a shared machine hits every
call alike; the large-GEMM rate is one of those calls, so "efficiency" (a run's FLOP/s over the GEMM rate)
is a ratio of the same kind. FLOPs are the cost model's (``rmtsched.specs.armt_cost``), the numbers the
simulator prices, so an achieved FLOP/s here is comparable with the simulator's rates.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping

import torch

from rmtsched.backends.torch import build_model, execute
from rmtsched.backends.torch.timing import warm_up
from rmtsched.sched import Schedule, graph_for_tokens, make_schedule, validate
from rmtsched.specs.armt_cost import armt_cell_kernels, full_attention_layer_kernels, total_flops
from rmtsched.specs.model import ModelSpec

GEMM_SIZE = 2048  # a square fp32 GEMM this size runs at the CPU's peak rate (MKL, any thread count)
GEMM_CALLS = 4  # per timed call: about half a second on the 2-core machine, like the runs it is paired with


class PairedRounds:
    """Times ``calls`` round by round; ``round()`` runs each once (rotated start) and records its seconds."""

    def __init__(self, calls: Mapping[str, Callable[[], object]]):
        self.calls = dict(calls)
        self.runs: dict[str, list[float]] = {name: [] for name in self.calls}
        self.rounds = 0

    def round(self) -> None:
        names = list(self.calls)
        shift = self.rounds % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            self.calls[name]()
            self.runs[name].append(time.perf_counter() - start)
        self.rounds += 1

    def median(self, name: str) -> float:
        return statistics.median(self.runs[name])


def gemm_call() -> tuple[Callable[[], object], float]:
    """A call doing ``GEMM_CALLS`` large fp32 GEMMs, and the FLOPs it does (its rate is the machine's peak)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(GEMM_SIZE, GEMM_SIZE, generator=generator)
    b = torch.randn(GEMM_SIZE, GEMM_SIZE, generator=generator)
    out = torch.empty(GEMM_SIZE, GEMM_SIZE)

    def call() -> None:
        for _ in range(GEMM_CALLS):
            torch.mm(a, b, out=out)

    call()  # MKL's first call sets up its buffers
    return call, 2.0 * GEMM_SIZE**3 * GEMM_CALLS


def armt_flops(spec: ModelSpec, num_tokens: int) -> float:
    """The cost model's FLOPs of one run of ``spec`` over ``num_tokens`` tokens (every cell of every segment)."""
    graph = graph_for_tokens(spec, num_tokens)
    per_layer = sum(total_flops(armt_cell_kernels(spec, tokens)) for tokens in graph.segment_tokens)
    return spec.num_layers * per_layer


def full_attention_flops(spec: ModelSpec, num_tokens: int) -> float:
    """The cost model's FLOPs of the full-attention baseline (causal attention over all ``num_tokens``)."""
    return spec.num_layers * total_flops(full_attention_layer_kernels(spec, num_tokens))


def schedule_calls(
    spec: ModelSpec, num_tokens: int, names: tuple[str, ...] = ("sequential", "diagonal"), gemm: str = "auto"
) -> dict[str, Callable[[], object]]:
    """One streaming ``execute`` call per schedule on a seeded ``spec`` model and random ids, warmed up (probes,
    allocator) and validated once up front, so the timed calls skip validation as ``time_schedule`` does."""
    model = build_model(spec, seed=0, matmul=gemm)
    inputs = torch.randint(0, spec.vocab_size, (1, num_tokens), generator=torch.Generator().manual_seed(0))
    graph = graph_for_tokens(spec, num_tokens)
    schedules: dict[str, Schedule] = {name: make_schedule(graph, name) for name in names}
    for schedule in schedules.values():
        validate(schedule, graph)
        warm_up(model, inputs, schedule)
    return {
        name: (lambda schedule=schedule: execute(model, inputs, schedule, validate=False, collect_outputs=False))
        for name, schedule in schedules.items()
    }


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


__all__ = [
    "GEMM_CALLS",
    "GEMM_SIZE",
    "PairedRounds",
    "armt_flops",
    "full_attention_flops",
    "gemm_call",
    "load_average",
    "schedule_calls",
]
