"""The cell DAG: rules, user graphs, graph errors, the compact edge index and the networkx view."""

from __future__ import annotations

import itertools
import math
import random
import re

import networkx as nx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sched_strategies import BUILTIN_RULES, FAST, cell_graphs, random_forward_edges

from rmtsched.errors import GraphError
from rmtsched.sched import (
    Cell,
    CellGraph,
    GlobalMemoryRule,
    LayerLocalRule,
    available_rules,
    build_cell_graph,
    get_rule,
    graph_for_tokens,
    split_segments,
    warmup_graph,
)

# -- split_segments ---------------------------------------------------------------------------------


@FAST
@given(st.integers(1, 10_000), st.integers(1, 600))
def test_split_segments_gives_ceil_n_over_t_segments_with_a_short_tail(num_tokens: int, segment_len: int) -> None:
    tokens = split_segments(num_tokens, segment_len)
    assert len(tokens) == math.ceil(num_tokens / segment_len)
    assert sum(tokens) == num_tokens
    assert all(t == segment_len for t in tokens[:-1])
    assert 0 < tokens[-1] <= segment_len


@pytest.mark.parametrize(
    ("num_tokens", "segment_len", "message"),
    [
        (10, 0, "segment length must be a positive integer, got 0"),
        (10, -4, "segment length must be a positive integer, got -4"),
        (0, 4, "sequence length must be a positive integer, got 0"),
        (10, 2.5, "segment length must be a positive integer, got 2.5"),
    ],
)
def test_split_segments_rejects_non_positive_lengths(num_tokens: int, segment_len: int, message: str) -> None:
    with pytest.raises(GraphError, match=message):
        split_segments(num_tokens, segment_len)


def test_graph_for_tokens_takes_depth_segment_length_and_rule_from_the_layout() -> None:
    class Layout:
        num_layers, segment_len, dependency_rule = 3, 4, "global_memory"

    graph = graph_for_tokens(Layout(), 10)
    assert (graph.num_layers, graph.segment_tokens) == (3, (4, 4, 2))
    assert Cell(2, 1) in set(graph.predecessors(Cell(0, 2)))
    with pytest.raises(GraphError, match="segment length must be a positive integer, got 0"):
        graph_for_tokens(type("Bad", (), {"num_layers": 2, "segment_len": 0, "dependency_rule": "layer_local"})(), 5)


def test_warmup_graph_keeps_l_plus_one_segments_and_the_short_tail() -> None:
    long = build_cell_graph(3, segment_tokens=(4,) * 10 + (2,), rule="global_memory")
    prefix = warmup_graph(long)
    assert (prefix.num_layers, prefix.segment_tokens, prefix.rule.name) == (3, (4, 4, 4, 4, 2), "global_memory")
    assert warmup_graph(build_cell_graph(2, segment_tokens=(4,) * 6)).segment_tokens == (4, 4, 4)
    short = build_cell_graph(3, segment_tokens=(4, 4, 1))
    assert warmup_graph(short).segment_tokens == (4, 4, 1)


# -- built-in rules ---------------------------------------------------------------------------------


@FAST
@given(st.integers(1, 12), st.integers(1, 40))
def test_layer_local_cells_wait_for_the_layer_below_and_the_segment_before(num_layers: int, num_segments: int) -> None:
    graph = build_cell_graph(num_layers, num_segments)
    for cell in graph.cells():
        expected = {Cell(cell.layer - 1, cell.segment), Cell(cell.layer, cell.segment - 1)}
        assert set(graph.predecessors(cell)) == {c for c in expected if c in graph}
        assert graph.level(cell) == cell.layer + cell.segment


@FAST
@given(st.integers(1, 12), st.integers(1, 40))
def test_global_memory_chains_every_cell(num_layers: int, num_segments: int) -> None:
    graph = build_cell_graph(num_layers, num_segments, rule="global_memory")
    order = sorted(graph.cells(), key=lambda c: (c.segment, c.layer))
    edges = set(graph.edges())
    assert all((a, b) in edges for a, b in itertools.pairwise(order))
    assert [graph.level(cell) for cell in order] == list(range(graph.num_cells))


@FAST
@given(cell_graphs())
def test_edge_index_matches_the_predecessors(graph: CellGraph) -> None:
    sources, targets = graph.edge_index()
    pairs = set(zip(sources.tolist(), targets.tolist(), strict=True))
    assert len(pairs) == len(sources)
    assert pairs == {(graph.cell_index(u), graph.cell_index(v)) for u, v in graph.edges()}
    assert [graph.cell_index(cell) for cell in graph.cells()] == list(range(graph.num_cells))


@FAST
@given(cell_graphs())
def test_levels_successors_and_topological_order_agree_with_edges(graph: CellGraph) -> None:
    order = graph.topological_order()
    position = {cell: i for i, cell in enumerate(order)}
    assert len(order) == graph.num_cells
    reference = graph.to_networkx()
    for source, target in graph.edges():
        assert position[source] < position[target]
        assert target in graph.successors(source)
        assert graph.level(target) > graph.level(source)
    for cell in graph.cells():
        # The longest path inside cell's ancestors ends at cell (every ancestor extends to it).
        ancestry = reference.subgraph(nx.ancestors(reference, cell) | {cell})
        assert graph.level(cell) == len(nx.dag_longest_path(ancestry)) - 1


def test_named_rules_and_rule_lookup() -> None:
    assert available_rules() == ["global_memory", "layer_local"]
    assert isinstance(get_rule("layer_local"), LayerLocalRule)
    assert isinstance(get_rule("global_memory"), GlobalMemoryRule)
    with pytest.raises(GraphError, match=r"unknown dependency rule 'armt': expected one of \['global_memory'"):
        get_rule("armt")
    with pytest.raises(GraphError, match="dependency rule 42 not understood"):
        get_rule(42)


def test_segment_tokens_are_node_attributes_and_the_last_segment_may_be_short() -> None:
    graph = build_cell_graph(2, segment_tokens=split_segments(10, 4))
    assert graph.num_segments == 3
    assert [graph.tokens(Cell(1, s)) for s in range(3)] == [4, 4, 2]
    assert graph.to_networkx().nodes[(0, 2)]["tokens"] == 2


# -- graph errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_layers": 0, "num_segments": 3}, "number of layers must be a positive integer, got 0"),
        ({"num_layers": -2, "num_segments": 3}, "number of layers must be a positive integer, got -2"),
        ({"num_layers": 2.0, "num_segments": 3}, "number of layers must be a positive integer, got 2.0"),
        ({"num_layers": 2, "num_segments": 0}, "number of segments must be a positive integer, got 0"),
        ({"num_layers": 2}, "number of segments must be a positive integer, got None"),
        ({"num_layers": 2, "segment_tokens": []}, "at least one segment, got 0"),
        ({"num_layers": 2, "segment_tokens": [4, 0]}, "segment 1 has 0 tokens: expected a positive integer"),
        ({"num_layers": 2, "num_segments": 3, "segment_tokens": [4, 4]}, "num_segments=3 disagrees with 2"),
    ],
)
def test_bad_sizes_are_graph_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(GraphError, match=re.escape(message)):
        build_cell_graph(**kwargs)


def _named_cycle(message: str) -> list[tuple[int, int]]:
    return [tuple(map(int, pair)) for pair in re.findall(r"\((\d+), (\d+)\)", message.split("cycle:")[1])]


@FAST
@given(st.integers(1, 6), st.integers(2, 10), st.integers(0, 2**32 - 1))
def test_a_cyclic_user_dag_is_refused_naming_a_real_cycle(num_layers: int, num_segments: int, seed: int) -> None:
    rng = random.Random(seed)
    edges = random_forward_edges(num_layers, num_segments, rng)
    cells = [Cell(layer, s) for layer in range(num_layers) for s in range(num_segments)]
    path = rng.sample(cells, rng.randint(2, min(4, len(cells))))
    edges += list(zip(path, path[1:] + path[:1], strict=True))  # close a cycle through random cells
    with pytest.raises(GraphError, match="has a cycle") as info:
        build_cell_graph(num_layers, num_segments, rule=edges)
    cycle = _named_cycle(str(info.value))
    assert cycle[0] == cycle[-1] and len(cycle) >= 3
    edge_set = {(tuple(u), tuple(v)) for u, v in edges}
    assert all(step in edge_set for step in itertools.pairwise(cycle))


def test_small_cycle_message() -> None:
    edges = [((0, 0), (0, 1)), ((0, 1), (1, 1)), ((1, 1), (0, 0))]
    with pytest.raises(GraphError, match=r"the dependency rule 'edges' has a cycle: \(\d, \d\) -> .* -> \(\d, \d\)"):
        build_cell_graph(2, 2, rule=edges)


@pytest.mark.parametrize(
    ("edges", "message"),
    [
        ([((0, 0), (0, 5))], r"edge into \(0, 5\) ends outside the grid of 2 layers x 3 segments"),
        ([((2, 0), (0, 1))], r"edge \(2, 0\) -> \(0, 1\) starts outside the grid of 2 layers x 3 segments"),
        ([((-1, 0), (0, 1))], r"edge \(-1, 0\) -> \(0, 1\) starts outside the grid"),
        ([((0, 1), (0, 1))], r"cell \(0, 1\) depends on itself"),
        ([((0, 0), (0, 1, 2))], r"edge .* is malformed: expected \(\(layer, segment\), \(layer, segment\)\)"),
        ([(0, 1)], r"edge \(0, 1\) is malformed"),
    ],
)
def test_edges_outside_the_grid_or_malformed_are_refused(edges: list, message: str) -> None:
    with pytest.raises(GraphError, match=message):
        build_cell_graph(2, 3, rule=edges)


def test_a_predecessor_function_returning_garbage_is_refused() -> None:
    with pytest.raises(GraphError, match=r"gave \[\(0,\)\] as the predecessors of \(0, 1\)"):
        build_cell_graph(1, 2, rule=lambda cell, L, S: [(0,)] if cell == (0, 1) else [])


def test_a_predecessor_function_defines_a_user_dag() -> None:
    # Every cell waits for the same layer two segments back: two independent chains per layer.
    graph = build_cell_graph(2, 5, rule=lambda cell, L, S: [(cell[0], cell[1] - 2)] if cell[1] >= 2 else [])
    assert graph.rule.name == "user"
    assert set(graph.predecessors(Cell(1, 4))) == {Cell(1, 2)}
    assert graph.level(Cell(0, 4)) == 2


# -- networkx view ----------------------------------------------------------------------------------


@FAST
@given(cell_graphs())
def test_to_networkx_and_back_keeps_cells_edges_and_tokens(graph: CellGraph) -> None:
    view = graph.to_networkx()
    assert set(view.nodes) == set(graph.cells())
    assert set(view.edges) == set(graph.edges())
    assert view.graph["num_layers"] == graph.num_layers and view.graph["num_segments"] == graph.num_segments
    back = CellGraph.from_networkx(view)
    assert (back.num_layers, back.num_segments, back.segment_tokens) == (
        graph.num_layers,
        graph.num_segments,
        graph.segment_tokens,
    )
    assert set(back.edges()) == set(graph.edges())
    assert nx.utils.graphs_equal(back.to_networkx(), nx.DiGraph(view, **back.to_networkx().graph))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: nx.DiGraph([("a", "b")]), r"node 'a' is not a cell"),
        (lambda: nx.DiGraph([((0, 0, 0), (0, 1, 0))]), r"node \(0, 0, 0\) is not a cell"),
        (lambda: nx.DiGraph([((0, 0), (1, 1))]), r"2 nodes do not form a full 2 x 2 grid"),
        (lambda: nx.DiGraph([((-1, 0), (0, 0))]), "do not form a full"),
        (lambda: nx.DiGraph(), "the graph has no cells"),
        (lambda: nx.Graph([((0, 0), (0, 1))]), "expected a networkx.DiGraph of cells, got Graph"),
        (lambda: [((0, 0), (0, 1))], "expected a networkx.DiGraph of cells, got list"),
    ],
)
def test_from_networkx_refuses_graphs_that_are_not_grids(build, message: str) -> None:
    with pytest.raises(GraphError, match=message):
        CellGraph.from_networkx(build())


def test_from_networkx_refuses_a_cycle_and_reads_tokens() -> None:
    graph = nx.DiGraph([((0, 0), (0, 1)), ((0, 1), (0, 0))])
    with pytest.raises(GraphError, match="has a cycle"):
        CellGraph.from_networkx(graph)
    acyclic = nx.DiGraph([((0, 0), (0, 1))])
    acyclic.nodes[(0, 1)]["tokens"] = 7
    assert CellGraph.from_networkx(acyclic).segment_tokens == (1, 7)
    assert CellGraph.from_networkx(acyclic, segment_tokens=[3, 3]).segment_tokens == (3, 3)


@pytest.mark.parametrize("rule", BUILTIN_RULES)
def test_builtin_graphs_are_compact_without_materialised_edges(rule: str) -> None:
    graph = build_cell_graph(32, 32_768, rule=rule)
    assert graph.num_cells == 1_048_576
    sources, targets = graph.edge_index()
    expected_edges = 31 * 32_768 + 32 * 32_767 + (32_767 if rule == "global_memory" else 0)
    assert len(sources) == len(targets) == expected_edges
    assert graph._preds is None  # closed-form rule: no per-cell Python objects were built
