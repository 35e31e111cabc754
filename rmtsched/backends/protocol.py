"""The plug-in protocol: what a recurrent model implements to be run by every executor.

A model is a stack of L layers that reads its input segment by segment; each layer may carry a state
from one segment to the next. The executor owns the order of work (the schedule); the model owns the
maths of a batched step over a contiguous range of layers. A width-1 step is the same call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch

from rmtsched.specs.cost import KernelWork

# Per-layer recurrent state: every tensor has the layer as its leading dimension, so the state of the
# contiguous layers l0..l1 is a slice view, updated in place by ``forward_layers``.
LayerState = dict[str, torch.Tensor]


@runtime_checkable
class RecurrentModel(Protocol):
    """A layer-recurrent model the executors can run under any valid schedule.

    ``num_layers`` is the model's total depth (the rows of the cell DAG); ``segment_len`` is T.
    ``dependency_rule`` names the cell DAG ("layer_local", "global_memory") or is a
    ``rmtsched.sched.DependencyRule``. ``uses_previous_output`` is True for global-memory models: the
    executor then passes the last layer's raw output of segment s-1 to ``segment_input`` of segment s.

    Two optional members serve the distributed executor (a model without them is kept whole on every
    process): ``layers`` (a ``range``, default ``range(num_layers)``) names the global layers this object
    holds, and ``slice_layers(start, stop)`` returns a model holding only layers start..stop-1 (its own
    weight copies and state rows). Layer indices passed to ``forward_layers`` are always GLOBAL; state
    row i belongs to layer ``layers.start + i``. A ``device`` attribute, if present, is where the
    executor puts the whole input once before the first step.

    Exactness: the executors give every schedule the same bits only if ``forward_layers`` is
    batch-invariant; ``rmtsched.backends.torch.kernels`` and ``RowMatmul`` are building blocks that are.
    """

    num_layers: int
    segment_len: int
    dependency_rule: object
    uses_previous_output: bool

    def init_state(self, batch_size: int) -> LayerState:
        """The state the held layers start a sequence with (e.g. zero associative memories); each tensor
        has one row per held layer in dim 0. Called once per sequence (batch) by the executor."""
        ...

    def segment_input(
        self, segment: int, inputs: torch.Tensor, previous_output: torch.Tensor | None
    ) -> torch.Tensor:
        """Layer 0's input for one segment, ``[batch, tokens_per_cell, d_model]``.

        ``inputs`` is this segment's slice of the user's input: token ids ``[batch, n]`` or embeddings
        ``[batch, n, d_model]``.
        """
        ...

    def forward_layers(self, hidden: torch.Tensor, layers: range, state: LayerState) -> torch.Tensor:
        """Run layers ``layers`` (contiguous, width w) on one segment each: ``hidden`` is
        ``[w, batch, tokens, d_model]``, row i belonging to layer ``layers[i]``. Returns the outputs in
        the same shape and updates those layers' state in place. Must give the same bits for row i
        whatever w is (batch invariance), which is what makes every schedule exact."""
        ...

    def segment_output(self, hidden: torch.Tensor) -> torch.Tensor:
        """What the caller receives for a segment, from the last layer's raw output ``[batch, tokens, d]``."""
        ...

    def cell_kernels(self, tokens: int) -> list[KernelWork]:
        """The cost description of one cell on ``tokens`` input tokens, for the simulator."""
        ...


@runtime_checkable
class TrainableModel(RecurrentModel, Protocol):
    """What a ``RecurrentModel`` adds to be trained under any training schedule (``train_gradients``).

    ``params`` holds every weight; those named in ``train_layer_params`` are stacked per layer (dim 0 =
    layer, global index), the rest are global (embeddings, norms, head). The executor hands each method
    leaves of its own in place of the weights and reads their gradients, so the methods must compute
    from the weights they are given, out of place, with autograd-differentiable ops.

    Exactness: ``train_layers`` row i of a width-w call must give the bits of the width-1 call on row i,
    forward AND backward (``rmtsched.backends.torch.grad_rowmm`` has GEMMs whose backward is row-exact,
    and per-row weight and bias ops); the ends run one cell at a time and need nothing special.
    """

    params: dict[str, torch.Tensor]
    train_layer_params: tuple[str, ...]

    def train_state(self, batch_size: int) -> torch.Tensor | None:
        """One layer's state before segment 0 (``[B, ...]``), or None for a model without layer state."""
        ...

    def train_segment_input(
        self, weights: Mapping[str, torch.Tensor], inputs: torch.Tensor, previous: torch.Tensor | None
    ) -> torch.Tensor:
        """``segment_input`` from the global ``weights``: token ids ``[B, n]`` -> layer 0's input ``[B, n', d]``;
        ``previous`` is the last layer's raw output of segment s-1 for a model that ``uses_previous_output``."""
        ...

    def train_layers(
        self,
        hidden: torch.Tensor,
        weights: Mapping[str, torch.Tensor],
        state: torch.Tensor | None,
        written: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``forward_layers``' maths out of place: row i of ``hidden`` ``[w, B, n, d]`` through the layer whose
        weights are row i of ``weights[name]`` (``[w, ...]``), with row i of ``state`` (``[w, ...]``, rows of
        ``train_state``'s shape); ``written[i]`` is True unless the row is its layer's segment 0. Returns the
        new hidden and state."""
        ...

    def train_logits(self, weights: Mapping[str, torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
        """The last layer's raw output ``[B, n', d]`` -> the segment's logits ``[B, n, V]`` from global ``weights``."""
        ...
