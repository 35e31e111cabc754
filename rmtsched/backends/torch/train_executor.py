"""The training executor: runs any valid training schedule and returns the loss and every parameter's gradient.

A step's cells run together. F builds one autograd graph per *group*: the step's cells of consecutive
layers (equal token counts) that will also be back-propagated in one B step (or, for a cell to be
recomputed, that need no graph at all); R rebuilds the groups of recomputed cells the same way; B runs each
of its groups' backward in one call, with the gradients their consumers sent (hidden states from the layer
above, memory state from the next segment, the segment's loss), and sends their leaves' gradients on.
The layers are the model's own code (``train_layers``: the inference path's layers, out of place, with
``GradRowMatmul``): a group of w cells is one width-w call. Steps on any device index run in this one
process, on the model's device (a pipelined schedule runs in order).

Why this equals ``loss.backward()`` through the sequential forward bit for bit (CPU): every kernel gives
row i of a width-w call the bits of the width-1 call, forward and backward (``grad_rowmm``); a tensor
crossing cells has exactly the consumers it has in the big graph, so its gradient sums the same terms in
the same order (a row with no gradient from above gets an exact zero); and autograd's engine runs nodes in
descending creation order, so a weight's big-graph gradient is its per-use contributions folded from the
last use backwards: ``_GradientFold`` folds ours in that order whatever order the schedule's B cells
produce them in. The longer story: docs/exactness.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from rmtsched.backends.protocol import TrainableModel
from rmtsched.backends.torch.executor import contiguous_runs, model_graph
from rmtsched.errors import RmtschedError
from rmtsched.sched import Cell, Phase, TrainGraph, TrainSchedule, split_segments, validate_train

IGNORE_INDEX = -100  # targets equal to this are not scored (as in F.cross_entropy)
UseKey = tuple[int, int]  # (segment, position): position 0 = segment input, 1 + l = layer l, L + 1 = loss


@dataclass(frozen=True)
class TrainStats:
    """What a training run did: steps, cells recomputed, most cells holding a graph at once, wall time."""

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
class _GroupGraph:
    """One autograd graph over a group of w cells (rows, by ascending layer): per-cell leaves (inputs and
    global weights, by use), the layer weights' leaves ``[w, ...]``, and the outputs (hidden ``[w, B, n, d]``,
    memory state ``[w, ...]``, each last-layer cell's segment loss)."""

    cells: tuple[Cell, ...]
    leaves: list[dict[str, torch.Tensor]]
    layer_leaves: dict[str, torch.Tensor]
    hidden: torch.Tensor
    state: torch.Tensor | None
    losses: list[torch.Tensor | None]


@dataclass
class _CellInputs:
    """What F read and R needs again: input hidden (or previous output), incoming state; the group graph."""

    hidden: torch.Tensor | None
    previous: torch.Tensor | None
    state: torch.Tensor | None
    graph: _GroupGraph | None = None


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
        self, model: TrainableModel, inputs: torch.Tensor, targets: torch.Tensor, graph: TrainGraph,
        schedule: TrainSchedule,
    ):
        self.model, self.graph, self.schedule = model, graph, schedule
        self.recomputed = schedule.recomputed
        _check_trainable(model)
        device = getattr(model, "device", inputs.device)
        self.inputs, self.targets = inputs.to(device), targets.to(device)
        self.num_scored = int((self.targets != IGNORE_INDEX).sum())
        if self.num_scored == 0:
            raise RmtschedError(f"every target is {IGNORE_INDEX} (ignored): a training step needs a token to score")
        self.segment_tokens = tuple(split_segments(int(inputs.shape[1]), model.segment_len))
        self.starts = [sum(self.segment_tokens[:s]) for s in range(len(self.segment_tokens) + 1)]
        self.num_layers, self.num_segments = model.num_layers, len(self.segment_tokens)
        self.layer_names = tuple(model.train_layer_params)
        self.first_layer = getattr(model, "layers", range(model.num_layers)).start  # row 0 of a stacked weight
        self.global_names = [name for name in model.params if name not in self.layer_names]
        self.records: dict[Cell, _CellInputs] = {}
        # Values crossing cells, keyed (kind, producing cell): "hidden" and "state" are F's outputs,
        # "grad_hidden" and "grad_state" the gradients B(cell) receives for them. ``put`` and ``take`` are
        # the only access, so a multi-process runner can move a value to or from another rank there.
        self.mailbox: dict[tuple[str, Cell], torch.Tensor] = {}
        self.losses: dict[int, torch.Tensor] = {}
        self.folds = self._folds()
        self.backward_step = {cell: index for index, step in enumerate(schedule.steps)
                              if step.phase is Phase.BACKWARD for cell in step.cells}
        self.peak_held = 0

    def run_step(self, index: int) -> None:
        """Run step ``index`` (F, R or B) of the schedule; a rank of a multi-process run runs only its own."""
        step = self.schedule.steps[index]
        if step.phase is Phase.BACKWARD:
            self.backward(step.cells)
            return
        for group in self.groups(step.cells, step.phase):
            if step.phase is Phase.FORWARD:
                self.forward(group)
            else:
                self.recompute(group)

    def groups(self, cells: tuple[Cell, ...], phase: Phase) -> list[list[Cell]]:
        """``cells`` of an F or R step split into groups that share one graph: consecutive layers, equal
        token counts, and the same B step (an F step's cells to be recomputed keep no graph: they group
        among themselves)."""
        by_key: dict[int | None, list[Cell]] = {}
        for cell in cells:
            keeps_graph = phase is Phase.RECOMPUTE or cell not in self.recomputed
            by_key.setdefault(self.backward_step.get(cell, -1) if keeps_graph else None, []).append(cell)
        return [run for group in by_key.values() for run in contiguous_runs(group, self.segment_tokens)]

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
    def forward(self, cells: list[Cell]) -> None:
        """F of a group: read its inputs, build its graph, send its outputs on (keep the graph unless the
        cells are to be recomputed)."""
        records = [self._read_inputs(cell) for cell in cells]
        graph = self._build(cells, records)
        for row, cell in enumerate(cells):
            layer, segment = cell
            if layer < self.num_layers - 1 or (self.model.uses_previous_output and segment + 1 < self.num_segments):
                self.put("hidden", cell, graph.hidden[row].detach())
            if graph.state is not None and segment + 1 < self.num_segments:
                self.put("state", cell, graph.state[row].detach())
            if graph.losses[row] is not None:
                self.losses[segment] = graph.losses[row].detach()
            records[row].graph = None if cell in self.recomputed else graph
            self.records[cell] = records[row]
        self._count_held()

    def recompute(self, cells: list[Cell]) -> None:
        graph = self._build(cells, [self.records[cell] for cell in cells])
        for cell in cells:
            self.records[cell].graph = graph
        self._count_held()

    def backward(self, cells: tuple[Cell, ...]) -> None:
        """B of a step: each group's backward in one call, then its gradients sent on."""
        graphs: dict[int, _GroupGraph] = {}
        for cell in cells:
            record = self.records.pop(cell)
            if record.graph is None:
                raise RmtschedError(
                    f"B{tuple(cell)} runs with no graph: recompute it first (was the schedule validated?)"
                )
            graphs[id(record.graph)] = record.graph
        for graph in graphs.values():
            missing = [cell for cell in graph.cells if cell not in cells]
            if missing:
                raise RmtschedError(f"B{tuple(missing[0])} is not in the B step of the cells it was built with")
            self._backward_group(graph)

    def _backward_group(self, graph: _GroupGraph) -> None:
        roots, grads = [], []
        for kind, output in (("grad_hidden", graph.hidden), ("grad_state", graph.state)):
            received = [self.take(kind, cell, required=False) for cell in graph.cells]
            if output is not None and output.requires_grad and any(g is not None for g in received):
                roots.append(output)  # a row nothing sends to gets an exact zero: x + 0 = x
                grads.append(torch.stack([torch.zeros_like(output[0]) if g is None else g for g in received]))
        for loss in graph.losses:
            if loss is not None and loss.requires_grad:
                roots.append(loss)
                grads.append(torch.ones_like(loss))
        torch.autograd.backward(roots, grads)
        for row, cell in enumerate(graph.cells):
            # A row of a wide group's gradient is copied out: a fold may keep it to the end of the run, and a
            # view would keep all w rows (w layers' weight gradients) alive with it.
            layer_grads = {name: None if leaf.grad is None else leaf.grad[row].clone() if len(graph.cells) > 1
                           else leaf.grad[0] for name, leaf in graph.layer_leaves.items()}
            self._send(cell, graph.leaves[row], layer_grads)

    def _send(self, cell: Cell, leaves: dict[str, torch.Tensor], layer_grads: dict[str, torch.Tensor | None]) -> None:
        """Gradients to the producers of this cell's inputs, and each weight use's share to its fold."""
        layer, segment = cell
        if "hidden" in leaves and leaves["hidden"].grad is not None:
            self.put("grad_hidden", Cell(layer - 1, segment), leaves["hidden"].grad)
        if "previous" in leaves and leaves["previous"].grad is not None:
            self.put("grad_hidden", Cell(self.num_layers - 1, segment - 1), leaves["previous"].grad)
        if "state" in leaves and leaves["state"].grad is not None:
            self.put("grad_state", Cell(layer, segment - 1), leaves["state"].grad)
        for name in self.layer_names:
            self.folds[(name, layer)].add((segment, 1 + layer), layer_grads[name])
        uses = [("input", 0)] if layer == 0 else []
        uses += [("output", self.num_layers + 1)] if layer == self.num_layers - 1 else []
        for use, position in uses:  # every global weight reports each use, used or not, so its fold moves on
            for name in self.global_names:
                leaf = leaves.get(f"{use}.{name}")
                self.folds[(name, None)].add((segment, position), None if leaf is None else leaf.grad)

    # -- one group's graph -------------------------------------------------------------------------
    def _read_inputs(self, cell: Cell) -> _CellInputs:
        layer, segment = cell
        record = _CellInputs(None, None, self._state_in(cell))
        if layer > 0:
            record.hidden = self.take("hidden", Cell(layer - 1, segment))
        elif segment > 0 and self.model.uses_previous_output:
            record.previous = self.take("hidden", Cell(self.num_layers - 1, segment - 1))
        return record

    def _build(self, cells: list[Cell], records: list[_CellInputs]) -> _GroupGraph:
        model, params = self.model, self.model.params
        leaves: list[dict[str, torch.Tensor]] = [{} for _ in cells]
        with torch.enable_grad():
            inputs, states = [], []
            for cell, record, cell_leaves in zip(cells, records, leaves, strict=True):
                states.append(self._leaf(cell_leaves, "state", record.state, self._state_has_gradient(cell)))
                if cell.layer == 0:
                    weights = self._global_leaves(cell_leaves, "input")
                    previous = self._leaf(cell_leaves, "previous", record.previous,
                                          self._previous_has_gradient(cell.segment))
                    inputs.append(model.train_segment_input(weights, self._tokens(cell.segment), previous))
                else:
                    inputs.append(self._leaf(cell_leaves, "hidden", record.hidden, True))
            rows = slice(cells[0].layer - self.first_layer, cells[-1].layer + 1 - self.first_layer)
            layer_leaves = {name: params[name][rows].detach().requires_grad_() for name in self.layer_names}
            hidden = torch.stack(inputs)  # [w, B, n, d]
            written = torch.tensor([cell.segment > 0 for cell in cells], device=hidden.device)
            state = None if states[0] is None else torch.stack(states)
            hidden, state = model.train_layers(hidden, layer_leaves, state, written)
            losses = [self._loss(hidden[row], cell.segment, self._global_leaves(leaves[row], "output"))
                      if cell.layer == self.num_layers - 1 else None for row, cell in enumerate(cells)]
        return _GroupGraph(tuple(cells), leaves, layer_leaves, hidden, state, losses)

    def _loss(self, hidden: torch.Tensor, segment: int, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy summed over the segment's scored tokens, over the number of scored tokens in the batch."""
        logits = self.model.train_logits(weights, hidden)  # [B, T, V]
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
            return self.model.train_state(int(self.inputs.shape[0]))
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
        """Cells whose graph is held (a group's graph counts once per cell in it)."""
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


def _check_trainable(model: object) -> None:
    missing = [name for name in ("params", "train_layer_params", "train_state", "train_segment_input", "train_layers",
                                 "train_logits") if not hasattr(model, name)]
    if missing:
        raise RmtschedError(
            f"training needs a model with differentiable cells (protocol.TrainableModel); {type(model).__name__} "
            f"lacks {', '.join(missing)}"
        )


def check_batch(inputs: torch.Tensor, targets: torch.Tensor) -> None:
    """Refuse (``RmtschedError``) anything but token ids ``[batch, tokens]`` and targets of the same shape."""
    if inputs.dim() != 2 or inputs.dtype not in (torch.int32, torch.int64) or targets.shape != inputs.shape:
        raise RmtschedError(
            f"training needs token ids [batch, tokens] and targets of the same shape, got inputs "
            f"{list(inputs.shape)} ({inputs.dtype}) and targets {list(targets.shape)}"
        )


def apply_gradients(model: TrainableModel, grads: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
    """Hand ``grads`` to ``optimizer`` (built over ``model.params.values()``) as each parameter's ``.grad``,
    take its step, then clear the ``.grad``s."""
    for name, param in model.params.items():
        param.grad = grads.get(name)
    optimizer.step()
    for param in model.params.values():
        param.grad = None


def train_gradients(
    model: TrainableModel,
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
    check_batch(inputs, targets)
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
    model: TrainableModel,
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
    apply_gradients(model, result.grads, optimizer)
    return result


__all__ = [
    "IGNORE_INDEX", "TrainResult", "TrainRunner", "TrainStats", "apply_gradients", "check_batch", "train_gradients",
    "train_step",
]
