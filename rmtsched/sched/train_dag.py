"""The training DAG: forward cells F(l, s), backward cells B(l, s), and optional recomputation R(l, s).

Backward edges are the forward edges reversed: if F(u) feeds F(v), the gradient of u's output comes from
B(v), so B(v) -> B(u). For layer-local memory that gives B(l+1, s) -> B(l, s) and B(l, s+1) -> B(l, s);
for RMT's global memory also B(0, s+1) -> B(L-1, s); a user rule gets its own edges reversed. B(c) also
needs what F(c) saved, F(c) -> B(c), or, where the schedule recomputes c, R(c) -> B(c) with F(c) -> R(c).
Truncated BPTT over the last k segments cuts the gradient of every cross-segment edge into a segment
s < S - k + 1 (RMT's ``k2``: the state entering such a segment is detached), so k = S is full BPTT.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import NamedTuple

from rmtsched.errors import GraphError
from rmtsched.sched.dag import Cell, CellGraph


class Phase(StrEnum):
    """What a training cell does: the forward pass, a recomputation of it, or the backward pass."""

    FORWARD = "F"
    RECOMPUTE = "R"
    BACKWARD = "B"


class TrainCell(NamedTuple):
    """Phase ``phase`` of cell (``layer``, ``segment``)."""

    phase: Phase
    layer: int
    segment: int

    @property
    def cell(self) -> Cell:
        return Cell(self.layer, self.segment)

    def __str__(self) -> str:
        return f"{self.phase.value}({self.layer}, {self.segment})"


class TrainGraph:
    """The training DAG of a forward ``CellGraph``: 2 L S cells (F and B), plus R(c) where a schedule asks.

    ``truncation`` (k, or None for full BPTT) keeps the gradient of a cross-segment edge u -> v only when
    v's segment is one of the last k segments but the first of them (s >= S - k + 1).
    """

    def __init__(self, forward: CellGraph, truncation: int | None = None):
        if truncation is not None and (
            not isinstance(truncation, int) or isinstance(truncation, bool) or truncation <= 0
        ):
            raise GraphError(f"BPTT truncation must be a positive number of segments or None, got {truncation!r}")
        self.forward = forward
        self.truncation = truncation
        self._backward_preds = self._reversed_edges()

    @property
    def num_layers(self) -> int:
        return self.forward.num_layers

    @property
    def num_segments(self) -> int:
        return self.forward.num_segments

    @property
    def first_gradient_segment(self) -> int:
        """The earliest segment whose incoming cross-segment state still carries a gradient back."""
        if self.truncation is None:
            return 0
        return max(0, self.num_segments - self.truncation + 1)

    def keeps_gradient(self, source: Cell, target: Cell) -> bool:
        """Does the gradient of forward edge ``source`` -> ``target`` flow back (truncation aside: always)?"""
        return source.segment == target.segment or target.segment >= self.first_gradient_segment

    def _reversed_edges(self) -> dict[Cell, tuple[Cell, ...]]:
        preds: dict[Cell, list[Cell]] = {cell: [] for cell in self.forward.cells()}
        for source, target in self.forward.edges():
            if self.keeps_gradient(source, target):
                preds[source].append(target)
        return {cell: tuple(targets) for cell, targets in preds.items()}

    def cells(self) -> Iterator[TrainCell]:
        """Every F cell then every B cell, each segment-major (R cells exist only in a schedule)."""
        for phase in (Phase.FORWARD, Phase.BACKWARD):
            for cell in self.forward.cells():
                yield TrainCell(phase, *cell)

    def gradient_sources(self, cell: Cell) -> tuple[Cell, ...]:
        """The cells whose backward sends a gradient into ``cell``'s outputs (the reversed forward edges)."""
        return self._backward_preds[cell]

    def predecessors(self, node: TrainCell, recomputed: bool = False) -> tuple[TrainCell, ...]:
        """What ``node`` waits for; ``recomputed`` says the schedule recomputes ``node``'s cell before B."""
        cell = node.cell
        if node.phase is Phase.FORWARD:
            return tuple(TrainCell(Phase.FORWARD, *pred) for pred in self.forward.predecessors(cell))
        if node.phase is Phase.RECOMPUTE:
            return (TrainCell(Phase.FORWARD, *cell),)
        saved = TrainCell(Phase.RECOMPUTE if recomputed else Phase.FORWARD, *cell)
        return (saved, *(TrainCell(Phase.BACKWARD, *succ) for succ in self._backward_preds[cell]))

    def __contains__(self, node: object) -> bool:
        return isinstance(node, TrainCell) and isinstance(node.phase, Phase) and node.cell in self.forward

    def __repr__(self) -> str:
        return f"TrainGraph({self.forward!r}, truncation={self.truncation})"


__all__ = ["Phase", "TrainCell", "TrainGraph"]
