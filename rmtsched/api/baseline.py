"""``rmtsched.run(..., schedule="full-attention")``: the same LLaMA weights without memory on all N tokens.

The baseline the Diagonal Batching paper compares ARMT against (design notes section 4), measured like
any schedule (``api/measuring.py``): median wall time of R runs, tokens/s, peak memory and
``output_sha256`` of the final-normed hidden states hashed chunk by chunk in order. The input goes through
``full_attention_forward`` ``chunk_tokens`` at a time (a chunked prefill over a KV cache). It is not a DAG
scheduler (no cells, nothing to validate or trace), so it stays out of the scheduler registry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rmtsched.api.measuring import OutputCallback, measure
from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.full_attention import DEFAULT_CHUNK_TOKENS
from rmtsched.backends.torch.timing import Timing, full_attention_call, time_calls
from rmtsched.errors import SpecError
from rmtsched.sim.study import FULL_ATTENTION


def check_full_attention_options(schedule: str, *, devices: int, in_process: bool, max_width: int | None,
                                 chunk_tokens: int | None, trace: object) -> None:
    """Options that mean nothing for the run asked for are refused, naming the value and why."""
    if schedule != FULL_ATTENTION:
        if chunk_tokens is not None:
            raise SpecError(f"chunk_tokens {chunk_tokens!r} applies to schedule {FULL_ATTENTION!r} only, "
                            f"got schedule {schedule!r}")
        return
    if chunk_tokens is not None and (isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int)
                                     or chunk_tokens < 1):
        raise SpecError(f"chunk_tokens must be a positive integer, got {chunk_tokens!r}")
    refused = {"devices": devices if devices != 1 else None, "max_width": max_width,
               "in_process": in_process or None, "trace": trace}
    for name, value in refused.items():
        if value is not None:
            raise SpecError(f"{name}={value!r} does not apply to {FULL_ATTENTION!r}: it is one causal pass on one "
                            "device, not a schedule of steps")


def run_full_attention(backend: StackedModel, ids: torch.Tensor, *, chunk_tokens: int | None, threads: int | None,
                       repeat: int, warmup: bool, progress: bool, save_to: Path | None) -> dict[str, Any]:
    """The baseline's part of ``rmtsched run``'s record: its chunks and everything ``measure`` reports."""
    chunk = DEFAULT_CHUNK_TOKENS if chunk_tokens is None else chunk_tokens
    chunks = -(-int(ids.shape[1]) // chunk)

    def timed(outputs: Callable[[int], OutputCallback]) -> Timing:
        call = full_attention_call(backend, ids, chunk_tokens=chunk, warmup=warmup, outputs=outputs)
        return time_calls({FULL_ATTENTION: call}, repeat=repeat, device=backend.device)[FULL_ATTENTION]

    measured = measure(backend, ids, timed, outputs_per_run=chunks, threads=threads, repeat=repeat,
                       progress=progress, save_to=save_to)
    return {"segments": None, "schedule": FULL_ATTENTION, "steps": chunks, "devices": 1, "chunk_tokens": chunk,
            "chunks": chunks, "trace": None, "cuda_graphs": False, **measured}


__all__ = ["check_full_attention_options", "run_full_attention"]
