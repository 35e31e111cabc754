"""Measured activation memory of a training step: the peak of the bytes the runner holds for the backward.

The CPU allocator keeps no statistics, tracemalloc does not see torch's buffers and a process's peak RSS
adds weight gradients, allocator caching and the interpreter. What the simulator's ``peak_activation_bytes``
predicts is narrower: the activations held from a cell's F (or R) to its B, plus a recomputed cell's
checkpoint. So the same thing is counted here, exactly: distinct tensor storages (a storage shared by
several tensors counts once) that are either saved by autograd in a cell graph not yet back-propagated
(``saved_tensors_hooks``) or handed between cells through ``TrainRunner.put`` (hidden and memory states on
their way to a consumer, kept as a recomputed cell's checkpoint, gradients on their way back), parameters
excluded. The count rises only when something is registered, so its maximum is read there.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.train_executor import TrainRunner
from rmtsched.sched import Cell, TrainGraph, TrainSchedule

StorageKey = tuple[torch.device, int]  # where a storage lives: two live storages never share one


class HeldBytes:
    """Live bytes of the distinct storages registered with ``track`` or saved under ``saving()``, and their peak.

    A storage counts from its first registration until every registered tensor on it has died (a weak
    reference per tracked tensor, a small wrapper object per saved tensor that autograd drops when it
    frees the graph). Storages of ``excluded`` tensors (the weights) never count.
    """

    def __init__(self, excluded: Iterable[torch.Tensor] = ()):
        self._excluded = {_storage_key(tensor) for tensor in excluded}
        self._holders: dict[StorageKey, int] = {}  # storage -> registered tensors alive on it
        self._sizes: dict[StorageKey, int] = {}
        self.live_bytes = 0
        self.peak_bytes = 0

    def track(self, tensor: torch.Tensor) -> None:
        """Count ``tensor``'s storage for as long as ``tensor`` lives."""
        key = self._hold(tensor)
        if key is not None:
            weakref.finalize(tensor, self._release, key)

    def saving(self) -> torch.autograd.graph.saved_tensors_hooks:
        """A context in which every tensor autograd saves for the backward counts until autograd frees it."""
        return torch.autograd.graph.saved_tensors_hooks(lambda tensor: _Saved(self, tensor), _Saved.unpack)

    def _hold(self, tensor: torch.Tensor) -> StorageKey | None:
        key, size = _storage_key(tensor), tensor.untyped_storage().nbytes()
        if size == 0 or key in self._excluded:
            return None
        if key not in self._holders:
            self._holders[key], self._sizes[key] = 0, size
            self.live_bytes += size
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        self._holders[key] += 1
        return key

    def _release(self, key: StorageKey) -> None:
        self._holders[key] -= 1
        if self._holders[key] == 0:
            del self._holders[key]
            self.live_bytes -= self._sizes.pop(key)


def _storage_key(tensor: torch.Tensor) -> StorageKey:
    return tensor.device, tensor.untyped_storage().data_ptr()


class _Saved:
    """One tensor autograd saved, held (detached: a saved output keeping its own ``grad_fn`` alive would be a
    reference cycle) until autograd frees the graph and with it this wrapper."""

    __slots__ = ("_key", "_tensor", "_tracker")

    def __init__(self, tracker: HeldBytes, tensor: torch.Tensor):
        self._tracker, self._tensor = tracker, tensor.detach()
        self._key = tracker._hold(self._tensor)

    def unpack(self) -> torch.Tensor:
        return self._tensor

    def __del__(self) -> None:
        if self._key is not None:
            self._tracker._release(self._key)


class _TrackingRunner(TrainRunner):
    """A ``TrainRunner`` whose values crossing cells count as held while anything keeps them."""

    def __init__(
        self, held: HeldBytes, model: StackedModel, inputs: torch.Tensor, targets: torch.Tensor, graph: TrainGraph,
        schedule: TrainSchedule,
    ):
        super().__init__(model, inputs, targets, graph, schedule)
        self.held = held

    def put(self, kind: str, cell: Cell, value: torch.Tensor) -> None:
        self.held.track(value)
        super().put(kind, cell, value)


@dataclass(frozen=True)
class TrainMemory:
    """One training step's measured peak of held activation bytes, and its loss and gradients (as a check
    that counting changed nothing)."""

    peak_bytes: int
    left_bytes: int  # still held after the last step: 0 unless a value crossing cells was never consumed
    loss: torch.Tensor
    grads: dict[str, torch.Tensor]


def measure_train_memory(
    model: StackedModel, inputs: torch.Tensor, targets: torch.Tensor, graph: TrainGraph, schedule: TrainSchedule
) -> TrainMemory:
    """Run ``schedule`` (already validated against ``graph``) once, counting the bytes held for the backward."""
    held = HeldBytes(model.params.values())
    runner = _TrackingRunner(held, model, inputs, targets, graph, schedule)
    with held.saving():
        for index in range(schedule.num_steps):
            runner.run_step(index)
    return TrainMemory(held.peak_bytes, held.live_bytes, runner.loss(), runner.gradients())


__all__ = ["HeldBytes", "TrainMemory", "measure_train_memory"]
