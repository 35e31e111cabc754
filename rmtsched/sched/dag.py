"""The cell DAG: which (layer, segment) cells must finish before which.

A run of an L-layer model over S segments is a grid of cells; a dependency rule gives each cell its
predecessors. ``CellGraph`` keeps the grid compact (closed-form edges for the built-in rules, so a
million-cell grid costs no per-edge objects) and hands out a ``networkx.DiGraph`` on request.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple, Protocol, runtime_checkable

import networkx as nx
import numpy as np

from rmtsched.errors import GraphError
from rmtsched.sched._gc import builds_bulk


class Cell(NamedTuple):
    """Layer ``layer`` processing segment ``segment``."""

    layer: int
    segment: int


def split_segments(num_tokens: int, segment_len: int) -> tuple[int, ...]:
    """Token counts of the S = ceil(N / T) segments of an N-token input; the last may be shorter."""
    if not isinstance(num_tokens, int) or num_tokens <= 0:
        raise GraphError(f"sequence length must be a positive integer, got {num_tokens!r}")
    if not isinstance(segment_len, int) or segment_len <= 0:
        raise GraphError(f"segment length must be a positive integer, got {segment_len!r}")
    full, rest = divmod(num_tokens, segment_len)
    return (segment_len,) * full + ((rest,) if rest else ())


@runtime_checkable
class DependencyRule(Protocol):
    """Gives the predecessors of a cell in an L x S grid.

    ``acyclic_by_construction`` lets the graph skip the cycle check for rules whose edges provably go
    forward; ``level`` (optional, may return None) is a closed form for the cell's ASAP wave index.
    A rule may also define ``edge_arrays(num_layers, num_segments)`` returning every edge as two arrays
    of flat cell indices (see ``CellGraph.edge_index``), so whole-grid checks never touch a Python cell.
    """

    name: str
    acyclic_by_construction: bool

    def predecessors(self, cell: Cell, num_layers: int, num_segments: int) -> tuple[Cell, ...]: ...

    def level(self, cell: Cell, num_layers: int, num_segments: int) -> int | None: ...


@dataclass(frozen=True)
class LayerLocalRule:
    """Per-layer memory (ARMT, Transformer-XL caches): (l, s) waits for (l-1, s) and (l, s-1).

    Every edge raises l + s by one, so the ASAP level of (l, s) is l + s: the anti-diagonals.
    """

    name: str = "layer_local"
    acyclic_by_construction: bool = True

    def predecessors(self, cell: Cell, num_layers: int, num_segments: int) -> tuple[Cell, ...]:
        layer, segment = cell
        preds = []
        if layer > 0:
            preds.append(Cell(layer - 1, segment))
        if segment > 0:
            preds.append(Cell(layer, segment - 1))
        return tuple(preds)

    def level(self, cell: Cell, num_layers: int, num_segments: int) -> int | None:
        return cell.layer + cell.segment

    def edge_arrays(self, num_layers: int, num_segments: int) -> tuple[np.ndarray, np.ndarray]:
        index = _index_grid(num_layers, num_segments)
        sources = np.concatenate([index[:, :-1].ravel(), index[:-1, :].ravel()])
        targets = np.concatenate([index[:, 1:].ravel(), index[1:, :].ravel()])
        return sources, targets


@dataclass(frozen=True)
class GlobalMemoryRule:
    """Global memory (original RMT): layer-local edges plus (L-1, s-1) -> (0, s).

    The memory tokens leave the last layer of s-1 and enter layer 0 of s, which chains every cell: the
    ASAP level of (l, s) is s * L + l and no two cells of one sequence can run together.
    """

    name: str = "global_memory"
    acyclic_by_construction: bool = True

    def predecessors(self, cell: Cell, num_layers: int, num_segments: int) -> tuple[Cell, ...]:
        preds = LayerLocalRule().predecessors(cell, num_layers, num_segments)
        if cell.layer == 0 and cell.segment > 0 and num_layers > 1:
            preds = (*preds, Cell(num_layers - 1, cell.segment - 1))
        return preds

    def level(self, cell: Cell, num_layers: int, num_segments: int) -> int | None:
        return cell.segment * num_layers + cell.layer

    def edge_arrays(self, num_layers: int, num_segments: int) -> tuple[np.ndarray, np.ndarray]:
        sources, targets = LayerLocalRule().edge_arrays(num_layers, num_segments)
        if num_layers == 1:
            return sources, targets
        index = _index_grid(num_layers, num_segments)
        return (
            np.concatenate([sources, index[:-1, num_layers - 1]]),
            np.concatenate([targets, index[1:, 0]]),
        )


def _index_grid(num_layers: int, num_segments: int) -> np.ndarray:
    """Flat cell indices as an S x L array: row s, column l holds s * L + l (segment-major)."""
    return np.arange(num_layers * num_segments, dtype=np.int64).reshape(num_segments, num_layers)


@dataclass(frozen=True)
class CallableRule:
    """A user-defined rule: any function ``(cell, num_layers, num_segments) -> predecessors``."""

    function: Callable[[Cell, int, int], Iterable[Sequence[int]]]
    name: str = "user"
    acyclic_by_construction: bool = False

    def predecessors(self, cell: Cell, num_layers: int, num_segments: int) -> tuple[Cell, ...]:
        preds = self.function(cell, num_layers, num_segments)
        try:
            return tuple(Cell(*pred) for pred in preds)
        except TypeError as exc:
            raise GraphError(
                f"the rule function gave {preds!r} as the predecessors of {tuple(cell)}: "
                "expected (layer, segment) pairs"
            ) from exc

    def level(self, cell: Cell, num_layers: int, num_segments: int) -> int | None:
        return None


class EdgeListRule:
    """A user-defined rule given as an explicit list of ``(from_cell, to_cell)`` edges."""

    name = "edges"
    acyclic_by_construction = False

    def __init__(self, edges: Iterable[tuple[Sequence[int], Sequence[int]]]):
        self._preds: dict[Cell, list[Cell]] = {}
        for edge in edges:
            try:
                source, target = edge
                source_cell, target_cell = Cell(*source), Cell(*target)
            except (TypeError, ValueError) as exc:
                raise GraphError(f"edge {edge!r} is malformed: expected ((layer, segment), (layer, segment))") from exc
            self._preds.setdefault(target_cell, []).append(source_cell)

    def predecessors(self, cell: Cell, num_layers: int, num_segments: int) -> tuple[Cell, ...]:
        return tuple(self._preds.get(cell, ()))

    def level(self, cell: Cell, num_layers: int, num_segments: int) -> int | None:
        return None


_NAMED_RULES: dict[str, DependencyRule] = {
    "layer_local": LayerLocalRule(),
    "global_memory": GlobalMemoryRule(),
}


def available_rules() -> list[str]:
    """Names of the built-in dependency rules (``get_rule`` also takes rule objects, functions and edges)."""
    return sorted(_NAMED_RULES)


RuleLike = str | DependencyRule | Callable[[Cell, int, int], Iterable[Sequence[int]]] | Sequence[tuple]


def get_rule(rule: RuleLike) -> DependencyRule:
    """Turn a rule name, rule object, predecessor function or edge list into a ``DependencyRule``."""
    if isinstance(rule, str):
        if rule not in _NAMED_RULES:
            raise GraphError(f"unknown dependency rule {rule!r}: expected one of {sorted(_NAMED_RULES)}")
        return _NAMED_RULES[rule]
    if isinstance(rule, DependencyRule):
        return rule
    if callable(rule):
        return CallableRule(rule)
    if isinstance(rule, Sequence):
        return EdgeListRule(rule)
    raise GraphError(f"dependency rule {rule!r} not understood: expected a name, a DependencyRule, a function or edges")


class CellGraph:
    """The DAG of an L x S grid of cells under one dependency rule.

    Edges are computed from the rule on demand; for user rules they are materialised once and checked
    for cycles and for endpoints outside the grid.
    """

    def __init__(self, num_layers: int, segment_tokens: Sequence[int], rule: RuleLike = "layer_local"):
        if not isinstance(num_layers, int) or num_layers <= 0:
            raise GraphError(f"number of layers must be a positive integer, got {num_layers!r}")
        if len(segment_tokens) == 0:
            raise GraphError("a cell graph needs at least one segment, got 0")
        for segment, tokens in enumerate(segment_tokens):
            if not isinstance(tokens, int) or tokens <= 0:
                raise GraphError(f"segment {segment} has {tokens!r} tokens: expected a positive integer")
        self.num_layers = num_layers
        self.segment_tokens = tuple(segment_tokens)
        self.num_segments = len(self.segment_tokens)
        self.rule = get_rule(rule)
        self._preds: dict[Cell, tuple[Cell, ...]] | None = None
        self._succs: dict[Cell, list[Cell]] | None = None
        self._levels: dict[Cell, int] | None = None
        self._edge_index: tuple[np.ndarray, np.ndarray] | None = None
        if not self.rule.acyclic_by_construction:
            self._materialise_user_edges()

    # -- structure -------------------------------------------------------------------------------
    @property
    def num_cells(self) -> int:
        return self.num_layers * self.num_segments

    def __contains__(self, cell: object) -> bool:
        return (
            isinstance(cell, tuple)
            and len(cell) == 2
            and all(isinstance(v, int) for v in cell)
            and 0 <= cell[0] < self.num_layers
            and 0 <= cell[1] < self.num_segments
        )

    def cells(self) -> Iterator[Cell]:
        """All cells, segment-major: every layer of segment 0, then segment 1, ... (flat index order)."""
        layers = range(self.num_layers)
        # tuple.__new__ through map builds each Cell in C, about twice as fast as calling Cell(l, s).
        for segment in range(self.num_segments):
            yield from map(tuple.__new__, repeat(Cell), zip(layers, repeat(segment)))

    def cell_index(self, cell: Cell) -> int:
        """The flat index of ``cell``: segment * L + layer, its position in ``cells()``."""
        return cell[1] * self.num_layers + cell[0]

    def tokens(self, cell: Cell) -> int:
        return self.segment_tokens[cell.segment]

    def predecessors(self, cell: Cell) -> tuple[Cell, ...]:
        if self._preds is not None:
            return self._preds[cell]
        return self.rule.predecessors(cell, self.num_layers, self.num_segments)

    def successors(self, cell: Cell) -> Sequence[Cell]:
        if self._succs is None:
            self._succs = {c: [] for c in self.cells()}
            for target in self.cells():
                for source in self.predecessors(target):
                    self._succs[source].append(target)
        return self._succs[cell]

    def edges(self) -> Iterator[tuple[Cell, Cell]]:
        for target in self.cells():
            for source in self.predecessors(target):
                yield source, target

    def edge_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Every edge as two int64 arrays of flat cell indices (``cell_index``): sources and targets.

        This is the compact form whole-grid checks vectorise over: at 1M cells the 2M edges of a
        layer-local grid take 32 MB, where the networkx view takes over a gigabyte. Built-in rules give it
        in closed form; other rules pay one pass over ``edges()``, cached.
        """
        if self._edge_index is not None:
            return self._edge_index
        edge_arrays = getattr(self.rule, "edge_arrays", None)
        if callable(edge_arrays):
            return edge_arrays(self.num_layers, self.num_segments)
        num_layers = self.num_layers
        flat = np.fromiter((cell[1] * num_layers + cell[0] for edge in self.edges() for cell in edge), np.int64)
        pairs = flat.reshape(-1, 2)
        self._edge_index = (pairs[:, 0].copy(), pairs[:, 1].copy())
        return self._edge_index

    def level(self, cell: Cell) -> int:
        """ASAP wave index: the length of the longest path from a source to ``cell``."""
        closed_form = self.rule.level(cell, self.num_layers, self.num_segments)
        if closed_form is not None:
            return closed_form
        if self._levels is None:
            self._levels = {}
            for node in self.topological_order():
                preds = self.predecessors(node)
                self._levels[node] = 1 + max((self._levels[p] for p in preds), default=-1)
        return self._levels[cell]

    def topological_order(self) -> list[Cell]:
        """Cells in an order that respects every edge, segment-major wherever the edges allow it.

        Kahn's algorithm that always takes the ready cell of lowest (segment, layer), i.e. lowest flat
        index: the order the sequential schedule runs a user-defined graph in.
        """
        cells = list(self.cells())
        indegree = [len(self.predecessors(cell)) for cell in cells]
        ready = [index for index, degree in enumerate(indegree) if degree == 0]
        order: list[Cell] = []
        while ready:
            cell = cells[heapq.heappop(ready)]
            order.append(cell)
            for succ in self.successors(cell):
                index = self.cell_index(succ)
                indegree[index] -= 1
                if indegree[index] == 0:
                    heapq.heappush(ready, index)
        if len(order) != self.num_cells:
            raise GraphError(f"the dependency rule {self.rule.name!r} has a cycle: {self._find_cycle()}")
        return order

    # -- networkx view ---------------------------------------------------------------------------
    @builds_bulk
    def to_networkx(self) -> nx.DiGraph:
        """The user-facing graph: nodes ``(layer, segment)`` with a ``tokens`` attribute.

        A view for users and networkx algorithms, not the internal form: at 1M cells it costs seconds and
        about a gigabyte (bench/README.md), where ``CellGraph`` itself is a few closed-form rules.
        """
        graph = nx.DiGraph(num_layers=self.num_layers, num_segments=self.num_segments, rule=self.rule.name)
        cells = list(self.cells())
        graph.add_nodes_from((cell, {"tokens": self.segment_tokens[cell[1]]}) for cell in cells)
        # Edges name the node objects themselves, so networkx holds one Cell per node, not one per edge end.
        sources, targets = self.edge_index()
        ends = map(cells.__getitem__, sources.tolist()), map(cells.__getitem__, targets.tolist())
        graph.add_edges_from(zip(*ends, strict=True))
        return graph

    @classmethod
    def from_networkx(cls, graph: nx.DiGraph, segment_tokens: Sequence[int] | None = None) -> CellGraph:
        """Wrap a user-built DiGraph whose nodes are exactly the cells of a full L x S grid.

        Segment token counts come from ``segment_tokens`` or else the nodes' ``tokens`` attributes
        (default 1); edges are checked like any user rule (inside the grid, no cycles).
        """
        if not isinstance(graph, nx.Graph) or not graph.is_directed():
            raise GraphError(f"expected a networkx.DiGraph of cells, got {type(graph).__name__}")
        nodes = list(graph.nodes)
        for node in nodes:
            if not (isinstance(node, tuple) and len(node) == 2 and all(isinstance(v, int) for v in node)):
                raise GraphError(f"node {node!r} is not a cell: expected a (layer, segment) pair of ints")
        if not nodes:
            raise GraphError("the graph has no cells")
        num_layers = 1 + max(node[0] for node in nodes)
        num_segments = 1 + max(node[1] for node in nodes)
        if len(nodes) != num_layers * num_segments or min(min(n) for n in nodes) < 0:
            raise GraphError(
                f"the graph's {len(nodes)} nodes do not form a full {num_layers} x {num_segments} grid of cells"
            )
        if segment_tokens is None:
            segment_tokens = [1] * num_segments
            for node, data in graph.nodes(data=True):
                segment_tokens[node[1]] = data.get("tokens", 1)
        return cls(num_layers, segment_tokens, EdgeListRule(graph.edges))

    # -- checks ----------------------------------------------------------------------------------
    def _materialise_user_edges(self) -> None:
        preds: dict[Cell, tuple[Cell, ...]] = {}
        for cell in self.cells():
            cell_preds = self.rule.predecessors(cell, self.num_layers, self.num_segments)
            for pred in cell_preds:
                if pred not in self:
                    raise GraphError(
                        f"edge {tuple(pred)} -> {tuple(cell)} starts outside the grid of "
                        f"{self.num_layers} layers x {self.num_segments} segments"
                    )
                if pred == cell:
                    raise GraphError(f"cell {tuple(cell)} depends on itself")
            preds[cell] = tuple(dict.fromkeys(cell_preds))
        if isinstance(self.rule, EdgeListRule):
            for target in self.rule._preds:
                if target not in self:
                    raise GraphError(
                        f"edge into {tuple(target)} ends outside the grid of "
                        f"{self.num_layers} layers x {self.num_segments} segments"
                    )
        self._preds = preds
        self.topological_order()

    def _find_cycle(self) -> str:
        graph = nx.DiGraph(self.edges())
        cycle = nx.find_cycle(graph)
        return " -> ".join(str(tuple(edge[0])) for edge in cycle) + f" -> {tuple(cycle[0][0])}"

    def __repr__(self) -> str:
        return f"CellGraph(layers={self.num_layers}, segments={self.num_segments}, rule={self.rule.name!r})"


def build_cell_graph(
    num_layers: int,
    num_segments: int | None = None,
    *,
    segment_tokens: Sequence[int] | None = None,
    rule: RuleLike = "layer_local",
) -> CellGraph:
    """Build the DAG of ``num_layers`` x ``num_segments`` cells.

    Give either ``num_segments`` (every segment then counts one token unit) or ``segment_tokens``
    (the token count of each segment, e.g. from ``split_segments``).
    """
    if segment_tokens is None:
        if not isinstance(num_segments, int) or num_segments <= 0:
            raise GraphError(f"number of segments must be a positive integer, got {num_segments!r}")
        segment_tokens = (1,) * num_segments
    elif num_segments is not None and num_segments != len(segment_tokens):
        raise GraphError(f"num_segments={num_segments} disagrees with {len(segment_tokens)} entries in segment_tokens")
    return CellGraph(num_layers, segment_tokens, rule)


@runtime_checkable
class ModelLayout(Protocol):
    """What the DAG needs to know of a model: its depth, segment length and dependency rule.

    A ``ModelSpec``, a backend model and a plug-in all have these three attributes, so each can be turned
    into its cell graph for an input length without the scheduling layer importing any of them.
    """

    num_layers: int
    segment_len: int
    dependency_rule: RuleLike


def graph_for_tokens(layout: ModelLayout, num_tokens: int) -> CellGraph:
    """The cell DAG of ``layout`` reading ``num_tokens`` tokens (the last segment may be short)."""
    return build_cell_graph(
        layout.num_layers,
        segment_tokens=split_segments(num_tokens, layout.segment_len),
        rule=layout.dependency_rule,
    )


def warmup_graph(graph: CellGraph) -> CellGraph:
    """The first L + 1 segments of ``graph`` plus its short last segment, if it has one.

    A schedule of this prefix has every step width and token count a schedule of the whole graph has
    (the diagonal is full from segment L on), so running it once, untimed, settles every one-time cost
    (GEMM probes, allocator, rotary tables) at a fraction of the run's cost.
    """
    tokens = graph.segment_tokens
    tail = (tokens[-1],) if len(tokens) > 1 and tokens[-1] != tokens[0] else ()
    prefix = tokens[: min(len(tokens) - len(tail), graph.num_layers + 1)] + tail
    return build_cell_graph(graph.num_layers, segment_tokens=prefix, rule=graph.rule)


__all__ = [
    "CallableRule",
    "Cell",
    "CellGraph",
    "DependencyRule",
    "EdgeListRule",
    "GlobalMemoryRule",
    "LayerLocalRule",
    "ModelLayout",
    "available_rules",
    "build_cell_graph",
    "get_rule",
    "graph_for_tokens",
    "split_segments",
    "warmup_graph",
]
