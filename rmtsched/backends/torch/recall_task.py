"""A toy associative-recall task and a training loop over it: shows a training schedule end to end.

A sequence lists ``num_pairs`` key-value pairs, then repeats one key; only the last position is scored,
against that key's value. Keys come from the lower half of the vocabulary and values from the upper half,
so a model that only learns the value vocabulary gets the loss to log(values); lower needs the memory to
carry the pairs across segments.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.executor import model_graph
from rmtsched.backends.torch.train_executor import IGNORE_INDEX, TrainResult, train_step
from rmtsched.errors import RmtschedError
from rmtsched.sched import TrainGraph, make_train_schedule

# train_step's signature: (model, inputs, targets, schedule, optimizer, *, truncation) -> TrainResult
OptimizerStep = Callable[..., TrainResult]


def recall_batch(
    vocab_size: int, num_pairs: int, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[B, 2 n + 1]`` (pairs, then a query key) and targets scoring only the last position."""
    half = vocab_size // 2
    if half < max(2, num_pairs):
        raise RmtschedError(
            f"associative recall with {num_pairs} distinct keys needs a vocabulary of at least "
            f"{2 * max(2, num_pairs)} tokens, got {vocab_size}"
        )
    keys = torch.argsort(torch.rand(batch_size, half, generator=generator), dim=1)[:, :num_pairs]  # distinct keys
    values = torch.randint(half, 2 * half, (batch_size, num_pairs), generator=generator)
    pairs = torch.stack((keys, values), dim=2).flatten(1)  # [B, 2n]: k1 v1 k2 v2 ...
    which = torch.randint(0, num_pairs, (batch_size, 1), generator=generator)
    inputs = torch.cat((pairs, keys.gather(1, which)), dim=1)  # [B, 2n + 1]
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, -1] = values.gather(1, which)[:, 0]
    return inputs, targets


def train_recall(
    model: StackedModel,
    schedule: str,
    *,
    steps: int,
    batch_size: int,
    num_pairs: int,
    lr: float,
    seed: int = 0,
    truncation: int | None = None,
    max_width: int | None = None,
    memory_budget: int | None = None,
    num_devices: int = 1,
    optimizer_step: OptimizerStep = train_step,
) -> list[TrainResult]:
    """``steps`` Adam steps of ``model`` on fresh recall batches, every one under training scheduler ``schedule``.

    ``num_devices`` goes to the scheduler; ``optimizer_step`` (``train_step``'s signature) takes each step,
    e.g. ``rmtsched.backends.distributed.train_step_pipelined`` to run a multi-device schedule on processes.
    """
    num_tokens = 2 * num_pairs + 1
    graph = TrainGraph(model_graph(model, num_tokens), truncation)
    plan = make_train_schedule(graph, schedule, max_width=max_width, memory_budget=memory_budget,
                               num_devices=num_devices)
    optimizer = torch.optim.Adam(list(model.params.values()), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    results = []
    for _ in range(steps):
        inputs, targets = recall_batch(model.spec.vocab_size, num_pairs, batch_size, generator)
        results.append(optimizer_step(model, inputs, targets, plan, optimizer, truncation=truncation))
    return results


__all__ = ["OptimizerStep", "recall_batch", "train_recall"]
