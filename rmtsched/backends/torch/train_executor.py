"""The training executor: runs any valid training schedule and returns the loss and every parameter's gradient.

Each F, R and B cell runs on its own: F builds the cell's autograd graph from detached leaves (its input
hidden states, its incoming memory state, one leaf per use of each weight) with ``train_cells``; R rebuilds
it from the kept inputs; B back-propagates the gradients its consumers sent (hidden states from the layer
above, memory state from the next segment, the segment's loss) and sends its leaves' gradients on. Steps
on any device index run in this one process, on the model's device (a pipelined schedule runs in order).

Why this equals ``loss.backward()`` through the sequential forward bit for bit (CPU): every cell runs the
same ops on the same inputs; a tensor crossing cells has exactly the consumers it has in the big graph, so
its gradient sums the same terms in the same order; and autograd's engine runs nodes in descending creation
order, so a weight's big-graph gradient is its per-use contributions folded from the last use backwards:
``_GradientFold`` folds ours in that order whatever order the schedule's B cells produce them in.
The longer story: docs/exactness.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.executor import model_graph
from rmtsched.backends.torch.params import layer_param_names
from rmtsched.backends.torch.train_cells import CellMaths, cell_maths, head_weight, initial_state
from rmtsched.errors import RmtschedError
from rmtsched.sched import Cell, Phase, TrainGraph, TrainSchedule, split_segments, validate_train

IGNORE_INDEX = -100  # targets equal to this are not scored (as in F.cross_entropy)
UseKey = tuple[int, int]  # (segment, position): position 0 = segment input, 1 + l = layer l, L + 1 = loss


@dataclass(frozen=True)
class TrainStats:
    """What a training run did: steps, cells recomputed, most cell graphs held at once, wall time."""

    steps: int
    recomputed_cells: int
    peak_held_graphs: int
    wall_s: float


@dataclass(frozen=True)
class TrainResult:
    """The loss (summed over segments, mean over scored tokens) and ``grads[name]`` shaped like ``params``."""

    loss: torch.Tensor
    grads: dict[str, torch.Tensor]
    stats: TrainStats


@dataclass
class _CellGraph:
    """A cell's autograd graph: its leaves (by use) and outputs (hidden, memory state, segment loss)."""

    leaves: dict[str, torch.Tensor]
    hidden: torch.Tensor
    state: torch.Tensor | None
    loss: torch.Tensor | None


@dataclass
class _CellInputs:
    """What F read and R needs again: input hidden (or token slice and previous output), incoming state."""

    hidden: torch.Tensor | None
    previous: torch.Tensor | None
    state: torch.Tensor | None
    graph: _CellGraph | None = None


@dataclass
class _GradientFold:
    """One weight (or one layer's row of a stacked weight): contributions folded in descending use order."""

    order: list[UseKey]
    pending: dict[UseKey, torch.Tensor | None] = field(default_factory=dict)
    total: torch.Tensor | None = None
    next_index: int = 0
    # Every contribution by use, when set to a dict: a rank of a multi-process run ships those of a weight
    # whose uses span ranks, so one fold over all of them keeps the order (partial sums would not).
    uses: dict[UseKey, torch.Tensor | None] | None = None

    def add(self, key: UseKey, grad: torch.Tensor | None) -> None:
        if self.uses is not None:
            self.uses[key] = grad
        self.pending[key] = grad
        while self.next_index < len(self.order) and self.order[self.next_index] in self.pending:
            grad = self.pending.pop(self.order[self.next_index])
            self.next_index += 1
            if grad is not None:
                self.total = grad if self.total is None else self.total + grad


class TrainRunner:
    """Interprets one training schedule on one batch; see the module docstring for the exactness argument."""

    def __init__(
        self, model: StackedModel, inputs: torch.Tensor, targets: torch.Tensor, graph: TrainGraph,
        schedule: TrainSchedule,
    ):
        self.model, self.graph, self.schedule = model, graph, schedule
        self.recomputed = schedule.recomputed
        self.maths: CellMaths = cell_maths(model)
        self.inputs, self.targets = inputs.to(model.device), targets.to(model.device)
        self.num_scored = int((self.targets != IGNORE_INDEX).sum())
        if self.num_scored == 0:
            raise RmtschedError(f"every target is {IGNORE_INDEX} (ignored): a training step needs a token to score")
        tokens = split_segments(int(inputs.shape[1]), model.segment_len)
        self.starts = [sum(tokens[:s]) for s in range(len(tokens) + 1)]
        self.num_layers, self.num_segments = model.num_layers, len(tokens)
        self.layer_names = layer_param_names(model.spec)
        self.global_names = [name for name in model.params if name not in self.layer_names]
        self.records: dict[Cell, _CellInputs] = {}
        # Values crossing cells, keyed (kind, producing cell): "hidden" and "state" are F's outputs,
        # "grad_hidden" and "grad_state" the gradients B(cell) receives for them. ``put`` and ``take`` are
        # the only access, so a multi-process runner can move a value to or from another rank there.
        self.mailbox: dict[tuple[str, Cell], torch.Tensor] = {}
        self.losses: dict[int, torch.Tensor] = {}
        self.folds = self._folds()
        self.peak_held = 0

    def run_step(self, index: int) -> None:
        """Run step ``index`` (F, R or B) of the schedule; a rank of a multi-process run runs only its own."""
        step = self.schedule.steps[index]
        for cell in step.cells:
            if step.phase is Phase.FORWARD:
                self.forward(cell, cell in self.recomputed)
            elif step.phase is Phase.RECOMPUTE:
                self.recompute(cell)
            else:
                self.backward(cell)

    # -- values crossing cells --------------------------------------------------------------------
    def put(self, kind: str, cell: Cell, value: torch.Tensor) -> None:
        """Hand ``value`` (``kind`` of ``cell``) to the cell that consumes it."""
        self.mailbox[(kind, cell)] = value

    def take(self, kind: str, cell: Cell, *, required: bool = True) -> torch.Tensor | None:
        """The ``kind`` value of ``cell`` a consumer needs now (None if not ``required`` and never sent)."""
        if required:
            return self.mailbox.pop((kind, cell))
        return self.mailbox.pop((kind, cell), None)

    # -- F, R, B ----------------------------------------------------------------------------------
    def forward(self, cell: Cell, recomputed: bool) -> None:
        layer, segment = cell
        record = _CellInputs(None, None, self._state_in(cell))
        if layer > 0:
            record.hidden = self.take("hidden", Cell(layer - 1, segment))
        elif segment > 0 and self.model.uses_previous_output:
            record.previous = self.take("hidden", Cell(self.num_layers - 1, segment - 1))
        graph = self._build(cell, record)
        if layer < self.num_layers - 1 or (self.model.uses_previous_output and segment + 1 < self.num_segments):
            self.put("hidden", cell, graph.hidden.detach())
        if graph.state is not None and segment + 1 < self.num_segments:
            self.put("state", cell, graph.state.detach())
        if graph.loss is not None:
            self.losses[segment] = graph.loss.detach()
        record.graph = None if recomputed else graph
        self.records[cell] = record
        self._count_held()

    def recompute(self, cell: Cell) -> None:
        record = self.records[cell]
        record.graph = self._build(cell, record)
        self._count_held()

    def backward(self, cell: Cell) -> None:
        record = self.records.pop(cell)
        graph = record.graph
        if graph is None:
            raise RmtschedError(f"B{tuple(cell)} runs with no graph: recompute it first (was the schedule validated?)")
        roots, grads = [], []
        for output, grad in ((graph.hidden, self.take("grad_hidden", cell, required=False)),
                             (graph.state, self.take("grad_state", cell, required=False)),
                             (graph.loss, None if graph.loss is None else torch.ones_like(graph.loss))):
            if output is not None and grad is not None and output.requires_grad:
                roots.append(output)
                grads.append(grad)
        torch.autograd.backward(roots, grads)
        self._send(cell, graph.leaves)

    def _send(self, cell: Cell, leaves: dict[str, torch.Tensor]) -> None:
        """Gradients to the producers of this cell's inputs, and each weight use's share to its fold."""
        layer, segment = cell
        if "hidden" in leaves and leaves["hidden"].grad is not None:
            self.put("grad_hidden", Cell(layer - 1, segment), leaves["hidden"].grad)
        if "previous" in leaves and leaves["previous"].grad is not None:
            self.put("grad_hidden", Cell(self.num_layers - 1, segment - 1), leaves["previous"].grad)
        if "state" in leaves and leaves["state"].grad is not None:
            self.put("grad_state", Cell(layer, segment - 1), leaves["state"].grad)
        for name in self.layer_names:
            self.folds[(name, layer)].add((segment, 1 + layer), leaves[f"layer.{name}"].grad)
        uses = [("input", 0)] if layer == 0 else []
        uses += [("output", self.num_layers + 1)] if layer == self.num_layers - 1 else []
        for use, position in uses:  # every global weight reports each use, used or not, so its fold moves on
            for name in self.global_names:
                leaf = leaves.get(f"{use}.{name}")
                self.folds[(name, None)].add((segment, position), None if leaf is None else leaf.grad)

    # -- one cell's graph --------------------------------------------------------------------------
    def _build(self, cell: Cell, record: _CellInputs) -> _CellGraph:
        layer, segment = cell
        model, params, leaves = self.model, self.model.params, {}
        with torch.enable_grad():
            state = self._leaf(leaves, "state", record.state, self._state_has_gradient(cell))
            if layer == 0:
                weights = self._global_leaves(leaves, "input")
                previous = self._leaf(leaves, "previous", record.previous, self._previous_has_gradient(segment))
                hidden = self.maths.segment_input(model, weights, self._tokens(segment), previous)
            else:
                hidden = self._leaf(leaves, "hidden", record.hidden, True)
            layer_weights = {name: self._leaf(leaves, f"layer.{name}", params[name][layer], True)
                             for name in self.layer_names}
            hidden, state = self.maths.layer(model, layer_weights, hidden, state, segment == 0)
            loss = self._loss(hidden, segment, self._global_leaves(leaves, "output")) \
                if layer == self.num_layers - 1 else None
        return _CellGraph(leaves, hidden, state, loss)

    def _loss(self, hidden: torch.Tensor, segment: int, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy summed over the segment's scored tokens, over the number of scored tokens in the batch."""
        output = self.maths.segment_output(self.model, weights, hidden)  # [B, T, d]
        logits = F.linear(output, head_weight(self.model, weights))  # [B, T, V]
        targets = self.targets[:, self.starts[segment] : self.starts[segment + 1]]
        scored = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
        return scored / self.num_scored

    def _global_leaves(self, leaves: dict[str, torch.Tensor], use: str) -> dict[str, torch.Tensor]:
        return {name: self._leaf(leaves, f"{use}.{name}", self.model.params[name], True) for name in self.global_names}

    @staticmethod
    def _leaf(
        leaves: dict[str, torch.Tensor], name: str, value: torch.Tensor | None, grad: bool
    ) -> torch.Tensor | None:
        """``value`` as a fresh leaf (tracking its gradient when ``grad``), recorded under ``name``."""
        if value is None:
            return None
        leaf = value.detach().requires_grad_(grad)
        if grad:
            leaves[name] = leaf
        return leaf

    def _tokens(self, segment: int) -> torch.Tensor:
        return self.inputs[:, self.starts[segment] : self.starts[segment + 1]]

    def _state_in(self, cell: Cell) -> torch.Tensor | None:
        if cell.segment == 0:
            return initial_state(self.model, int(self.inputs.shape[0]))
        return self.take("state", Cell(cell.layer, cell.segment - 1), required=False)

    def _state_has_gradient(self, cell: Cell) -> bool:
        return cell.segment > 0 and cell.segment >= self.graph.first_gradient_segment

    def _previous_has_gradient(self, segment: int) -> bool:
        return segment > 0 and segment >= self.graph.first_gradient_segment

    # -- bookkeeping --------------------------------------------------------------------------------
    def _folds(self) -> dict[tuple[str, int | None], _GradientFold]:
        """Every weight's fold, its uses in descending creation order of the sequential forward."""
        segments = range(self.num_segments - 1, -1, -1)
        folds: dict[tuple[str, int | None], _GradientFold] = {}
        for name in self.layer_names:
            for layer in range(self.num_layers):
                folds[(name, layer)] = _GradientFold([(s, 1 + layer) for s in segments])
        for name in self.global_names:
            folds[(name, None)] = _GradientFold([(s, p) for s in segments for p in (self.num_layers + 1, 0)])
        return folds

    def _count_held(self) -> None:
        self.peak_held = max(self.peak_held, sum(1 for r in self.records.values() if r.graph is not None))

    def gradients(self) -> dict[str, torch.Tensor]:
        grads: dict[str, torch.Tensor] = {}
        for name in self.global_names:
            total = self.folds[(name, None)].total
            if total is not None:
                grads[name] = total
        for name in self.layer_names:
            rows = [self.folds[(name, layer)].total for layer in range(self.num_layers)]
            if any(row is not None for row in rows):
                param = self.model.params[name]
                grads[name] = torch.stack([torch.zeros_like(param[i]) if row is None else row
                                           for i, row in enumerate(rows)])
        return grads

    def loss(self) -> torch.Tensor:
        losses: Iterator[torch.Tensor] = (self.losses[s] for s in range(self.num_segments))
        total = next(losses)
        for value in losses:
            total = total + value
        return total


def train_gradients(
    model: StackedModel,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    schedule: TrainSchedule,
    *,
    truncation: int | None = None,
    validate: bool = True,
) -> TrainResult:
    """Run ``schedule`` over token ids ``inputs`` ``[B, N]`` scored against ``targets`` ``[B, N]``.

    Targets equal to ``IGNORE_INDEX`` are not scored. ``truncation`` (k) back-propagates through the memory
    over the last k segments only, as the schedule's ``TrainGraph`` says.
    """
    if inputs.dim() != 2 or inputs.dtype not in (torch.int32, torch.int64) or targets.shape != inputs.shape:
        raise RmtschedError(
            f"training needs token ids [batch, tokens] and targets of the same shape, got inputs "
            f"{list(inputs.shape)} ({inputs.dtype}) and targets {list(targets.shape)}"
        )
    graph = TrainGraph(model_graph(model, int(inputs.shape[1])), truncation)
    if validate:
        validate_train(schedule, graph)
    start = time.perf_counter()
    runner = TrainRunner(model, inputs, targets, graph, schedule)
    for index in range(schedule.num_steps):
        runner.run_step(index)
    stats = TrainStats(schedule.num_steps, len(runner.recomputed), runner.peak_held, time.perf_counter() - start)
    return TrainResult(runner.loss(), runner.gradients(), stats)


def train_step(
    model: StackedModel,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    schedule: TrainSchedule,
    optimizer: torch.optim.Optimizer,
    *,
    truncation: int | None = None,
) -> TrainResult:
    """One optimizer step: gradients by ``train_gradients``, handed to ``optimizer`` (built over
    ``model.params.values()``) as each parameter's ``.grad``, then ``optimizer.step()``."""
    result = train_gradients(model, inputs, targets, schedule, truncation=truncation)
    for name, param in model.params.items():
        param.grad = result.grads.get(name)
    optimizer.step()
    for param in model.params.values():
        param.grad = None
    return result


__all__ = ["IGNORE_INDEX", "TrainResult", "TrainRunner", "TrainStats", "train_gradients", "train_step"]
