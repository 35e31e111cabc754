"""Run a block with a given number of torch intra-op threads and put the caller's count back after.

One helper for every place that changes the count for a while: ``RowMatmul`` (a thread-sensitive GEMM
layout runs with one thread), ``rmtsched run --threads-per-process``, calibration targets, and tests
that compare thread counts. ``torch.set_num_threads`` is process-wide, so leaving it changed would
silently change every later computation's speed (and, without ``RowMatmul``, its bits).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def intra_op_threads(count: int | None) -> Iterator[int]:
    """Run the block with ``count`` intra-op threads (None: leave the count as it is); yields the count."""
    previous = torch.get_num_threads()
    if count is not None and count != previous:
        torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


__all__ = ["intra_op_threads"]
