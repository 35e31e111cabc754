"""Timing schedules on the backend: the one loop behind ``rmtsched run``, ``compare`` and the benchmarks.

``schedule_calls`` and ``full_attention_call`` turn schedules and the full-attention baseline into calls
that ``time_calls`` times side by side (``time_schedule`` is both steps for schedules alone).

``time_schedule`` validates each schedule once, warms up on a short prefix (untimed), then times
``repeat`` runs of every schedule, the schedules taking turns (the starting one rotating each round, so
drift in a shared machine's load hits them alike), each run bracketed by a device synchronisation (CUDA
work is asynchronous; on the CPU it is a no-op). Callers take the median of the runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import torch

from rmtsched.backends.protocol import RecurrentModel
from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.full_attention import DEFAULT_CHUNK_TOKENS, ChunkCallback, full_attention_forward
from rmtsched.sched import Schedule, make_schedule, warmup_graph
from rmtsched.sched import validate as validate_schedule

Clock = Callable[[], float]
# (schedule name, repeat index) -> the segment-output callback of that run (or None).
OutputsOf = Callable[[str, int], Callable[[int, torch.Tensor], None] | None]


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued work on ``device`` (CUDA); nothing to wait for on the CPU."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """The timed runs of one schedule (or callable), in seconds, in the order they ran."""

    runs_s: tuple[float, ...]

    @property
    def median_s(self) -> float:
        return statistics.median(self.runs_s)


def time_calls(
    calls: Mapping[str, Callable[[int], object]],
    *,
    repeat: int,
    device: torch.device | str | None = None,
    clock: Clock = time.perf_counter,
    after_each: Callable[[], None] | None = None,
) -> dict[str, Timing]:
    """Time ``calls[name](repeat_index)`` ``repeat`` times each, interleaved, each run ended by a device sync.

    In round r the calls take turns starting from the (r mod n)-th, so no call always runs first.
    ``after_each`` runs after every timed call, outside the timing (a progress bar).
    """
    if repeat < 1:
        raise ValueError(f"repeat must be a positive integer, got {repeat!r}")
    names = list(calls)
    runs: dict[str, list[float]] = {name: [] for name in names}
    for index in range(repeat):
        shift = index % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = clock()
            calls[name](index)
            synchronize(device)
            runs[name].append(clock() - start)
            if after_each is not None:
                after_each()
    return {name: Timing(tuple(values)) for name, values in runs.items()}


def warm_up(model: RecurrentModel, inputs: torch.Tensor, schedule: Schedule, *, cuda_graphs: bool = False) -> None:
    """Run the same scheduler on a short prefix of ``inputs`` (L + 1 segments plus the short tail), untimed.

    That covers every step width and token count the full run will use, so ``RowMatmul``'s one-time
    probes, the allocator and the thread pools are ready before anything is timed (and, with
    ``cuda_graphs``, the step shapes are captured).
    """
    from rmtsched.backends.torch.executor import execute, model_graph  # here: the executor imports synchronize

    graph = warmup_graph(model_graph(model, int(inputs.shape[1])))
    options = {"max_width": schedule.options.get("max_width"), "num_devices": schedule.num_devices}
    prefix = inputs[:, : sum(graph.segment_tokens)]
    execute(model, prefix, make_schedule(graph, schedule.scheduler, **options), collect_outputs=False,
            cuda_graphs=cuda_graphs)


def schedule_calls(
    model: RecurrentModel,
    inputs: torch.Tensor,
    schedules: Mapping[str, Schedule],
    *,
    warmup: bool = True,
    outputs: OutputsOf | None = None,
    cuda_graphs: bool = False,
) -> dict[str, Callable[[int], None]]:
    """One call per schedule, ready for ``time_calls``: ``call(index)`` runs the schedule on ``inputs``.

    Every schedule is validated once here; the calls skip validation (the simulator does not model it
    either). ``warmup`` first runs each scheduler on a short prefix, untimed. ``outputs(name, index)``
    gives run ``index`` of ``name`` its segment-output callback (hashing, collecting); nothing else is kept.
    ``cuda_graphs`` runs every step through captured CUDA graphs (``execute``'s option).
    """
    from rmtsched.backends.torch.executor import execute, model_graph  # here: the executor imports synchronize

    graph = model_graph(model, int(inputs.shape[1]))
    for schedule in schedules.values():
        validate_schedule(schedule, graph)
    if warmup:
        for schedule in schedules.values():
            warm_up(model, inputs, schedule, cuda_graphs=cuda_graphs)

    def call(name: str, index: int) -> None:
        callback = outputs(name, index) if outputs is not None else None
        execute(model, inputs, schedules[name], validate=False, on_segment_output=callback, collect_outputs=False,
                cuda_graphs=cuda_graphs)

    return {name: partial(call, name) for name in schedules}


def full_attention_call(
    model: StackedModel,
    inputs: torch.Tensor,
    *,
    chunk_tokens: int | None = None,
    warmup: bool = True,
    outputs: Callable[[int], ChunkCallback | None] | None = None,
) -> Callable[[int], None]:
    """The full-attention baseline as a call for ``time_calls``: ``call(index)`` runs it on all of ``inputs``.

    ``warmup`` first runs it, untimed, on the first chunk (the chunk shape every later chunk repeats);
    ``outputs(index)`` gives run ``index`` its chunk-output callback.
    """
    chunk = DEFAULT_CHUNK_TOKENS if chunk_tokens is None else chunk_tokens
    if warmup:
        full_attention_forward(model, inputs[:, :chunk], chunk_tokens=chunk)

    def call(index: int) -> None:
        full_attention_forward(model, inputs, chunk_tokens=chunk, on_output=outputs(index) if outputs else None)

    return call


def time_schedule(
    model: RecurrentModel,
    inputs: torch.Tensor,
    schedules: Mapping[str, Schedule],
    *,
    repeat: int = 1,
    warmup: bool = True,
    clock: Clock = time.perf_counter,
    outputs: OutputsOf | None = None,
    after_each: Callable[[], None] | None = None,
    cuda_graphs: bool = False,
) -> dict[str, Timing]:
    """Time each of ``schedules`` on ``model`` over ``inputs`` (token ids ``[B, N]`` or embeddings):
    ``schedule_calls`` (validated once, warmed up unless ``warmup`` is False) timed by ``time_calls``.
    Returns each schedule's timed runs."""
    calls = schedule_calls(model, inputs, schedules, warmup=warmup, outputs=outputs, cuda_graphs=cuda_graphs)
    return time_calls(calls, repeat=repeat, device=getattr(model, "device", None), clock=clock, after_each=after_each)


__all__ = ["Timing", "full_attention_call", "schedule_calls", "synchronize", "time_calls", "time_schedule", "warm_up"]
