"""JSON records the CLI prints for results the backends return: built here, so backends return data only.

``pipeline_record`` is the part of ``rmtsched run --devices P``'s record (and the torchrun worker's) that a
multi-process run determines; the caller adds what it knows (model, seq_len, dtype, threads).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI stays torch-free until a handler runs
    from rmtsched.backends.distributed import PipelineResult


def pipeline_record(result: PipelineResult) -> dict[str, Any]:
    """The run's fields (``rmtsched run``'s names), plus ``processes``, ``backend``, the bubble and ``ranks``
    (per-rank layers, busy, waiting and wall time, and peak memory; the run's peak is the max over ranks)."""
    return {
        "schedule": result.scheduler,
        "steps": result.num_steps,
        "devices": result.num_procs,
        "processes": result.num_procs,
        "backend": result.backend,
        "device": result.device,
        "segments": result.num_segments,
        "repeat": len(result.wall_s_runs),
        "wall_s": result.wall_s,
        "wall_s_all": list(result.wall_s_runs),
        "tokens_per_s": result.tokens_per_s,
        "peak_memory_bytes": max(rank.peak_memory_bytes for rank in result.ranks),
        "peak_memory_kind": "cuda_max_allocated" if result.device == "cuda" else "process_peak_rss",
        "output_sha256": result.output_sha256,
        "bubble_fraction": result.bubble_fraction,
        "ideal_bubble_fraction": result.ideal_bubble_fraction,
        "ranks": [
            {
                "rank": rank.rank,
                "layers": list(rank.layers),
                "busy_s": rank.busy_s,
                "wait_s": rank.wait_s,
                "wall_s": rank.wall_s,
                "holds_all_layers": rank.holds_all_layers,
                "peak_memory_bytes": rank.peak_memory_bytes,
            }
            for rank in result.ranks
        ],
    }
