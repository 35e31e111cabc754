"""What the built-in training schedulers share: forward waves, their mirror image for the backward pass.

Each backward edge is a forward edge reversed, so any forward order read backwards is a valid backward
order, and the forward ASAP waves (the anti-diagonals, for layer-local memory) taken last to first are
the backward waves.
"""

from __future__ import annotations

from rmtsched.errors import ScheduleError
from rmtsched.sched.dag import Cell
from rmtsched.sched.schedulers.diagonal import waves
from rmtsched.sched.schedulers.ordering import chunks
from rmtsched.sched.train_dag import TrainGraph
from rmtsched.sched.train_registry import TrainOptions


def wave_batches(graph: TrainGraph, max_width: int | None) -> list[tuple[Cell, ...]]:
    """The forward diagonal schedule's steps: each ASAP wave, split into at most ``max_width`` cells."""
    return [batch for wave in waves(graph.forward) for batch in chunks(wave, max_width)]


def require_single_device(name: str, options: TrainOptions) -> None:
    if options.num_devices != 1:
        raise ScheduleError(
            f"training scheduler {name!r} runs on one device, got num_devices={options.num_devices}; "
            "use 'pipelined' to spread layers over devices"
        )


def require_no_budget(name: str, options: TrainOptions) -> None:
    if options.memory_budget is not None:
        raise ScheduleError(
            f"training scheduler {name!r} keeps every activation and takes no memory_budget "
            f"(got {options.memory_budget}); use 'checkpointed' to recompute under a budget"
        )


__all__ = ["require_no_budget", "require_single_device", "wave_batches"]
