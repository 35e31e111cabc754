"""A real run timed step by step: the measured side of a real-run trace and of a per-step comparison.

One extra, untimed run of a schedule with ``sim.trace.StepRecorder`` on the executor's step hook. It is
kept apart from the timed runs because on CUDA the recorder synchronises the device at every step
boundary (a step's time is then its device work), which the timed runs must not pay.
"""

from __future__ import annotations

from functools import partial

import torch

from rmtsched.backends.protocol import RecurrentModel
from rmtsched.backends.torch.executor import execute
from rmtsched.backends.torch.timing import synchronize
from rmtsched.sched import Schedule
from rmtsched.sim.trace import StepRecorder


def record_steps(model: RecurrentModel, inputs: torch.Tensor, schedule: Schedule) -> StepRecorder:
    """Run ``schedule`` on ``model`` over ``inputs`` once, outputs dropped; the recorder holds each step's
    start and end (seconds; ``recorder.trace(schedule)`` is its Chrome trace)."""
    device = getattr(model, "device", None)
    cuda = device is not None and torch.device(device).type == "cuda"
    recorder = StepRecorder(sync=partial(synchronize, device) if cuda else None)
    execute(model, inputs, schedule, collect_outputs=False, on_step=recorder)
    return recorder


__all__ = ["record_steps"]
