"""Orderings of a cell graph that several schedulers share.

The built-in rules have closed forms (segment-major order is topological for both, bottom levels are
arithmetic); user-defined graphs fall back to generic graph algorithms.
"""

from __future__ import annotations

import numpy as np

from rmtsched.errors import ScheduleError
from rmtsched.sched.dag import Cell, CellGraph, GlobalMemoryRule, LayerLocalRule
from rmtsched.sched.schedule import SchedulerOptions


def has_builtin_rule(graph: CellGraph) -> bool:
    return isinstance(graph.rule, LayerLocalRule | GlobalMemoryRule)


def segment_major_order(graph: CellGraph) -> list[Cell]:
    """A topological order that prefers finishing segment s before touching s+1 (ties by layer)."""
    return list(graph.cells()) if has_builtin_rule(graph) else graph.topological_order()


def successor_csr(graph: CellGraph) -> tuple[list[int], list[int], list[int]]:
    """Successors of every flat cell index in compressed-sparse-row form, plus every cell's in-degree.

    The successors of i are ``successors[offsets[i]:offsets[i + 1]]``. Built from ``edge_index`` with
    numpy, so a million-cell grid costs no Python object per edge beyond the returned int lists.
    """
    sources, targets = graph.edge_index()
    offsets, successors = _csr(sources, targets, graph.num_cells)
    return offsets, successors, np.bincount(targets, minlength=graph.num_cells).tolist()


def predecessor_csr(graph: CellGraph) -> tuple[list[int], list[int]]:
    """Predecessors of every flat cell index: ``predecessors[offsets[i]:offsets[i + 1]]``."""
    sources, targets = graph.edge_index()
    return _csr(targets, sources, graph.num_cells)


def _csr(keys: np.ndarray, values: np.ndarray, size: int) -> tuple[list[int], list[int]]:
    offsets = np.zeros(size + 1, np.int64)
    np.cumsum(np.bincount(keys, minlength=size), out=offsets[1:])
    return offsets.tolist(), values[np.argsort(keys, kind="stable")].tolist()


def segment_major_indices(graph: CellGraph) -> list[int]:
    """``segment_major_order`` as flat cell indices (for the built-in rules simply 0 .. L*S - 1)."""
    if has_builtin_rule(graph):
        return list(range(graph.num_cells))
    return [graph.cell_index(cell) for cell in segment_major_order(graph)]


def bottom_levels(graph: CellGraph) -> np.ndarray:
    """Cells on the longest path from each cell to a sink, itself included, by flat cell index.

    This is the critical-path priority of list scheduling. Closed forms for the built-in rules:
    layer-local (L - l) + (S - 1 - s); global memory (S - s) * L - l.
    """
    num_layers, num_segments = graph.num_layers, graph.num_segments
    index = np.arange(graph.num_cells, dtype=np.int64)
    layer, segment = index % num_layers, index // num_layers
    if isinstance(graph.rule, LayerLocalRule):
        return (num_layers - layer) + (num_segments - 1 - segment)
    if isinstance(graph.rule, GlobalMemoryRule):
        return (num_segments - segment) * num_layers - layer
    offsets, successors, _ = successor_csr(graph)
    levels = [0] * graph.num_cells
    for cell in reversed(graph.topological_order()):
        i = graph.cell_index(cell)
        levels[i] = 1 + max((levels[j] for j in successors[offsets[i] : offsets[i + 1]]), default=0)
    return np.array(levels, dtype=np.int64)


def require_single_device(name: str, options: SchedulerOptions) -> None:
    if options.num_devices != 1:
        raise ScheduleError(
            f"scheduler {name!r} runs on one device, got num_devices={options.num_devices}; "
            "use 'pipelined' to spread layers over devices"
        )


def chunks(cells: list[Cell], max_width: int | None) -> list[tuple[Cell, ...]]:
    """Split a batch of independent cells into steps of at most ``max_width`` cells."""
    if max_width is None:
        return [tuple(cells)]
    return [tuple(cells[i : i + max_width]) for i in range(0, len(cells), max_width)]
