"""The result of a distributed run, assembled from every rank's report.

Wall time of a repeat is its makespan: the slowest rank's time from the common barrier to its last send.
Bubble fraction is the share of the P x makespan rank-seconds spent not computing, to compare with the
pipeline's closed form (P - 1) / (S + P - 1) for equal stages and free transfers.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch

from rmtsched.backends.distributed.job import RankReport
from rmtsched.sched import CellGraph, Schedule


@dataclass(frozen=True)
class RankSummary:
    """One rank's median times over the repeats, what it held, and its peak memory (max over ranks is the
    run's ``peak_memory_bytes``)."""

    rank: int
    layers: tuple[int, int]
    busy_s: float
    wait_s: float
    wall_s: float
    holds_all_layers: bool
    peak_memory_bytes: int


@dataclass(frozen=True)
class PipelineResult:
    """Median makespan, output hash, per-rank times; outputs and final states only when asked for."""

    num_procs: int
    backend: str
    device: str
    scheduler: str
    num_steps: int
    num_tokens: int
    num_segments: int
    wall_s: float
    wall_s_runs: tuple[float, ...]
    output_sha256: str
    bubble_fraction: float
    ideal_bubble_fraction: float
    ranks: tuple[RankSummary, ...]
    outputs: list[torch.Tensor] | None = field(default=None, repr=False)
    nonfinite_outputs: int = 0
    final_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def tokens_per_s(self) -> float:
        return self.num_tokens / self.wall_s if self.wall_s > 0 else float("inf")


def summarise(
    reports: list[RankReport],
    schedule: Schedule,
    graph: CellGraph,
    *,
    batch_size: int,
    backend: str,
    device: str,
    keep_outputs: bool,
) -> PipelineResult:
    num_procs = len(reports)
    repeats = len(reports[0].times)
    makespans = [max(report.times[i].wall_s for report in reports) for i in range(repeats)]
    busy = [sum(report.times[i].busy_s for report in reports) for i in range(repeats)]
    bubbles = [1.0 - b / (num_procs * m) if m > 0 else 0.0 for b, m in zip(busy, makespans, strict=True)]
    last = next(report for report in reports if report.output_sha256 is not None)
    outputs = final_state = None
    if keep_outputs:
        outputs = [last.outputs[segment] for segment in range(graph.num_segments)]
        final_state = {
            name: torch.cat([report.final_state[name] for report in sorted(reports, key=lambda r: r.layers)])
            for name in reports[0].final_state
        }
    return PipelineResult(
        num_procs=num_procs,
        backend=backend,
        device=device,
        scheduler=schedule.scheduler,
        num_steps=schedule.num_steps,
        num_tokens=batch_size * sum(graph.segment_tokens),
        num_segments=graph.num_segments,
        wall_s=statistics.median(makespans),
        wall_s_runs=tuple(makespans),
        output_sha256=last.output_sha256,
        nonfinite_outputs=last.nonfinite_outputs,
        bubble_fraction=statistics.median(bubbles),
        ideal_bubble_fraction=(num_procs - 1) / (graph.num_segments + num_procs - 1),
        ranks=tuple(
            RankSummary(
                rank=report.rank,
                layers=report.layers,
                busy_s=statistics.median(t.busy_s for t in report.times),
                wait_s=statistics.median(t.wait_s for t in report.times),
                wall_s=statistics.median(t.wall_s for t in report.times),
                holds_all_layers=report.holds_all_layers,
                peak_memory_bytes=report.peak_memory_bytes,
            )
            for report in reports
        ),
        outputs=outputs,
        final_state=final_state,
    )
