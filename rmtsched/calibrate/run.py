"""Run microbenchmarks with a progress bar and turn them into ``Measurement``s."""

from __future__ import annotations

import gc
import statistics
from collections.abc import Sequence

import torch
from tqdm import tqdm

from rmtsched.calibrate.device import Target, using_threads
from rmtsched.calibrate.measurement import Measurement
from rmtsched.calibrate.microbench import Bench
from rmtsched.calibrate.timing import TimingPolicy, sample_times_s


def run_benches(
    benches: Sequence[Bench], target: Target, policy: TimingPolicy, *, progress: bool = True
) -> list[Measurement]:
    """Time every bench (under ``inference_mode``, as the executor runs) and describe it for the fit.

    With ``policy.rounds`` > 1 every bench is set up once and visited ``rounds`` times, the benches
    taking turns, and its time is the median of all its samples: slow spells of a shared machine then
    touch every bench alike instead of inflating the few that happened to run during one.
    """
    samples: list[list[float]] = [[] for _ in benches]
    with torch.inference_mode(), using_threads(target):
        calls = [None] * len(benches)
        with tqdm(total=len(benches) * policy.rounds, desc="calibrate", unit="bench", disable=not progress,
                  leave=False) as bar:
            for visit in range(policy.rounds):
                visit_policy = policy.visit(visit)
                for index, bench in enumerate(benches):
                    if calls[index] is None:
                        calls[index] = bench.setup()
                    samples[index] += sample_times_s(calls[index], target.device, visit_policy)
                    if visit == policy.rounds - 1:
                        calls[index] = None  # free the bench's tensors and models as soon as it is done
                    bar.update()
    gc.collect()
    return [
        Measurement(bench.name, bench.group, bench.kernels, bench.width, statistics.median(times),
                    target.dtype_bytes, bench.layers, bench.steps)
        for bench, times in zip(benches, samples, strict=True)
    ]


__all__ = ["run_benches"]
