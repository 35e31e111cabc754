"""The plug-in protocol: what a recurrent model implements to be run by every executor.

A model is a stack of L layers that reads its input segment by segment; each layer may carry a state
from one segment to the next. The executor owns the order of work (the schedule); the model owns the
maths of a batched step over a contiguous range of layers. A width-1 step is the same call.
"""

from __future__ import annotations

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
