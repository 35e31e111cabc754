"""Run a wide CPU step as independent row parts side by side, each with fewer intra-op threads.

Why: a diagonal step of width w holds w independent cells, but one ``forward_layers`` call over all of
them runs some sixty small kernels one after another, each an OpenMP parallel region whose threads meet at
a barrier. On the 2-core development machine those barriers cost the step most of its second core, and
far more when another process holds a core (a 2-thread full-width ``armt-small`` step measured 85-470 ms
under a load average of 4 to 6, against 41-81 ms as two 1-thread halves; bench/README.md). Two halves of
the step, each a width-w/2 call at one thread on its own Python thread (torch releases the GIL inside
every kernel), keep both cores busy with no barrier between them.

Exactness is unchanged: a part is a narrower step (every kernel is batch-invariant) at fewer threads
(every kernel gives the one-thread bits at any thread count, ``RowMatmul``'s thread probe), the same two
properties that already make a diagonal step and a one-thread pipeline rank equal the sequential run
(docs/exactness.md). Only models that say their ``forward_layers`` may run on disjoint layer ranges at once
(``concurrent_layer_runs = True``, the built-in ARMT and RMT) are split, and only on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

import torch

from rmtsched.backends.torch.threads import intra_op_threads

T = TypeVar("T")

_pools: dict[int, ThreadPoolExecutor] = {}  # one pool per part count, made on first use, kept for the process


def split_parts(model: object, width: int) -> tuple[int, int]:
    """``(parts, threads per part)`` for a run of ``width`` cells of ``model`` at the caller's thread count.

    ``(1, threads)`` (run it whole) unless the model opts in, lives on the CPU, and both the run and the
    thread count are at least 2. Parts get ``threads // parts`` threads each, so they never oversubscribe.
    """
    threads = torch.get_num_threads()
    if width < 2 or threads < 2 or not getattr(model, "concurrent_layer_runs", False):
        return 1, threads
    device = getattr(model, "device", None)
    if device is not None and torch.device(device).type != "cpu":
        return 1, threads
    parts = min(threads, width)
    return parts, threads // parts


def part_bounds(width: int, parts: int) -> list[slice]:
    """``parts`` contiguous, non-empty slices covering ``0..width-1``, sizes differing by at most one."""
    if not 1 <= parts <= width:
        raise ValueError(f"cannot split {width} rows into {parts} non-empty parts")
    base, extra = divmod(width, parts)
    bounds, start = [], 0
    for index in range(parts):
        stop = start + base + (index < extra)
        bounds.append(slice(start, stop))
        start = stop
    return bounds


def run_parts(calls: Sequence[Callable[[], T]], threads_per_part: int) -> list[T]:
    """Run ``calls`` concurrently, each on a pool thread with ``threads_per_part`` intra-op threads and the
    caller's grad and inference mode; return their results in order. Every call has finished when this
    returns, also when one raised (its exception is re-raised, the first in order)."""
    if len(calls) == 1:
        return [calls[0]()]
    pool = _pools.get(len(calls))
    if pool is None:
        pool = _pools[len(calls)] = ThreadPoolExecutor(len(calls), thread_name_prefix="rmtsched-rows")

    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def in_worker(call: Callable[[], T]) -> T:
        # Grad/inference mode and the intra-op thread count are per thread: set them where the kernels run.
        with torch.inference_mode(inference), torch.set_grad_enabled(grad), intra_op_threads(threads_per_part):
            return call()

    futures: list[Future[T]] = [pool.submit(in_worker, call) for call in calls]
    wait(futures)
    return [future.result() for future in futures]


__all__ = ["part_bounds", "run_parts", "split_parts"]
