"""Multi-process training: one rank per device of a training schedule, gradients equal to one process.

``train_pipelined`` checks everything it can, plans every rank (``train_plan``), starts them with the
forward pipeline's launcher (same watchdog, lifeline and errors naming the rank and step) and folds what
they hand back. Bit-exactness (docs/exactness.md): each cell runs the same ops on the same values as in one
process; a weight used on one rank is folded there as one process folds it; a weight used on several (the
embeddings, memory, norm and head: layer 0 and the last layer) is folded here, from every use's
contribution, in the one process's order. A single-process ``TrainRunner`` that runs no step holds the
fold, so the loss and gradients come out of the same code as ``train_gradients``'.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from rmtsched.backends.distributed.errors import DistributedConfigError, DistributedError
from rmtsched.backends.distributed.launch import _check_arguments, _launch, _pickle_job
from rmtsched.backends.distributed.train_plan import build_train_plans
from rmtsched.backends.distributed.train_rank import TrainRankJob, TrainRankReport
from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.executor import model_graph
from rmtsched.backends.torch.models import build_model
from rmtsched.backends.torch.train_executor import (
    TrainResult,
    TrainRunner,
    TrainStats,
    apply_gradients,
    check_batch,
)
from rmtsched.errors import RmtschedError
from rmtsched.sched import TrainGraph, TrainSchedule, validate_train
from rmtsched.sched.train_render import train_grid_note


def train_pipelined(
    model: StackedModel,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    schedule: TrainSchedule,
    *,
    num_procs: int,
    truncation: int | None = None,
    threads_per_proc: int | None = None,
    timeout_s: float = 60.0,
    start_method: str = "forkserver",
) -> TrainResult:
    """``train_gradients`` of ``schedule`` on ``num_procs`` local CPU processes (gloo), one per device.

    Every rank gets ``model``'s weights and runs its device's steps. The loss and every gradient equal
    ``train_gradients`` on one process bit for bit, at any intra-op thread count on either side
    (``threads_per_proc``, default this process's count split evenly, at least one: the training kernels
    are thread-exact, docs/exactness.md). ``timeout_s`` bounds how long the run may go without any rank making progress.
    """
    if threads_per_proc is None:
        threads_per_proc = max(1, torch.get_num_threads() // max(1, num_procs))
    _check_arguments(num_procs, "cpu", threads_per_proc, timeout_s, 1)
    if schedule.num_devices != num_procs:
        raise DistributedConfigError(
            f"training schedule {schedule.scheduler!r} runs on {schedule.num_devices} device(s) but {num_procs} "
            f"processes were asked for: expected a schedule on {num_procs} devices (e.g. 'pipelined')",
            kind="config",
        )
    try:
        check_batch(inputs, targets)
    except RmtschedError as error:
        raise DistributedConfigError(str(error), kind="config") from None
    if model.device.type != "cpu":
        raise DistributedConfigError(f"multi-process training runs on CPU, got a model on {model.device}",
                                     kind="config")  # fmt: skip
    graph = TrainGraph(model_graph(model, int(inputs.shape[1])), truncation)
    validate_train(schedule, graph)
    # The fold of the result, and the bad-input checks of a one-process run (targets, model family) up front.
    merged = TrainRunner(model, inputs, targets, graph, schedule)
    plans = build_train_plans(schedule, graph, bool(model.uses_previous_output))
    factory = functools.partial(build_model, model.spec, params={name: p.detach() for name, p in model.params.items()})
    blobs = [_pickle_job(TrainRankJob(factory, inputs, targets, truncation, schedule, plan)) for plan in plans]
    try:
        reports: list[TrainRankReport] = _launch(blobs, "gloo", "cpu", threads_per_proc, timeout_s, start_method)
    except (DistributedError, DistributedConfigError) as exc:
        if exc.step is not None:
            exc.add_note(train_grid_note(schedule, graph, tuple(schedule.steps[exc.step].nodes())))
        raise
    for report in reports:
        merged.losses.update(report.losses)
        for key, total in report.totals.items():
            merged.folds[key].total = total
        for key, uses in report.uses.items():
            for use, grad in uses.items():
                merged.folds[key].add(use, grad)
    stats = TrainStats(schedule.num_steps, len(schedule.recomputed), max(r.peak_held_graphs for r in reports),
                       max(r.wall_s for r in reports))  # fmt: skip
    return TrainResult(merged.loss(), merged.gradients(), stats)


def train_step_pipelined(
    model: StackedModel,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    schedule: TrainSchedule,
    optimizer: torch.optim.Optimizer,
    *,
    truncation: int | None = None,
    **launch: Any,
) -> TrainResult:
    """``train_step`` with ``train_pipelined``'s gradients, on ``schedule.num_devices`` processes: each
    parameter's ``.grad`` is set, ``optimizer.step()`` runs here, then the ``.grad``s are cleared.
    ``launch`` passes ``threads_per_proc``, ``timeout_s`` or ``start_method`` on."""
    result = train_pipelined(model, inputs, targets, schedule, num_procs=schedule.num_devices, truncation=truncation,
                             **launch)  # fmt: skip
    apply_gradients(model, result.grads, optimizer)
    return result


__all__ = ["train_pipelined", "train_step_pipelined"]
