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

from rmtsched.errors import SpecError

# torch.set_num_threads takes any positive int, but 100000 threads crash the process (a segfault in the
# thread pool); no machine this runs on gains from more intra-op threads than this.
MAX_INTRA_OP_THREADS = 1024


def check_thread_count(count: int) -> int:
    """``count`` if it is a usable intra-op thread count (1..MAX_INTRA_OP_THREADS), else a ``SpecError``."""
    if not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= MAX_INTRA_OP_THREADS:
        raise SpecError(f"thread count must be an integer from 1 to {MAX_INTRA_OP_THREADS}, got {count!r}")
    return count


@contextmanager
def intra_op_threads(count: int | None) -> Iterator[int]:
    """Run the block with ``count`` intra-op threads (None: leave the count as it is); yields the count."""
    if count is not None:
        check_thread_count(count)
    previous = torch.get_num_threads()
    if count is not None and count != previous:
        torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


__all__ = ["MAX_INTRA_OP_THREADS", "check_thread_count", "intra_op_threads"]
