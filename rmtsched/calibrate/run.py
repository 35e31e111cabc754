"""Run microbenchmarks with a progress bar and turn them into ``Measurement``s."""

from __future__ import annotations

import gc
from collections.abc import Sequence

import torch
from tqdm import tqdm

from rmtsched.calibrate.device import Target, using_threads
from rmtsched.calibrate.measurement import Measurement
from rmtsched.calibrate.microbench import Bench
from rmtsched.calibrate.timing import TimingPolicy, median_time_s


def run_benches(
    benches: Sequence[Bench], target: Target, policy: TimingPolicy, *, progress: bool = True
) -> list[Measurement]:
    """Time every bench (under ``inference_mode``, as the executor runs) and describe it for the fit."""
    measurements = []
    with torch.inference_mode(), using_threads(target):
        for bench in tqdm(benches, desc="calibrate", unit="bench", disable=not progress, leave=False):
            call = bench.setup()
            seconds = median_time_s(call, target.device, policy)
            del call
            measurements.append(
                Measurement(bench.name, bench.group, bench.kernels, bench.width, seconds, target.dtype_bytes,
                            bench.layers, bench.steps)
            )
    gc.collect()
    return measurements


__all__ = ["run_benches"]
