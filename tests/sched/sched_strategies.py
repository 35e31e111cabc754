"""Hypothesis strategies shared by the sched tests: random cell graphs and random valid schedules.

User-defined DAGs come from a seeded ``random.Random`` rather than from per-edge draws, so a 480-cell
graph costs hypothesis a few bytes of data; they are acyclic by construction (forward edges over a
random topological order, or a random subset of a built-in rule's edges) and arrive in every form
``build_cell_graph`` accepts: an edge list, a predecessor function, or a networkx graph.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from random_dags import predecessor_rule, random_valid_schedule, shuffled_forward_edges

from rmtsched.sched import Cell, CellGraph, Schedule, Step, Transfer, build_cell_graph, split_segments

# Modest example counts keep the whole sched suite well under a minute on two cores.
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
THOROUGH = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BUILTIN_RULES = ("layer_local", "global_memory")
ALL_RULE_KINDS = (*BUILTIN_RULES, "user")
SCHEDULERS = ("sequential", "diagonal", "pipelined", "greedy")


def random_forward_edges(num_layers: int, num_segments: int, rng: random.Random) -> list[tuple[Cell, Cell]]:
    """A random DAG over the grid: either forward edges over a shuffled order, or a subset of a built-in rule."""
    if rng.random() < 0.5:
        return shuffled_forward_edges(num_layers, num_segments, rng)
    keep = rng.choice((0.3, 0.7, 1.0))
    base = build_cell_graph(num_layers, num_segments, rule=rng.choice(BUILTIN_RULES))
    return [edge for edge in base.edges() if rng.random() < keep]


def user_rule(edges: list[tuple[Cell, Cell]], form: str) -> object:
    """The same edges as an edge list or as a predecessor function."""
    if form == "edges":
        return [(tuple(source), tuple(target)) for source, target in edges]
    return predecessor_rule(edges)


@st.composite
def cell_graphs(
    draw: st.DrawFn,
    rules: tuple[str, ...] = ALL_RULE_KINDS,
    max_layers: int = 12,
    max_segments: int = 40,
) -> CellGraph:
    """A CellGraph with L in 1..max_layers, S in 1..max_segments, a rule from ``rules``, varied tokens."""
    num_layers = draw(st.integers(1, max_layers))
    num_segments = draw(st.integers(1, max_segments))
    segment_len = draw(st.integers(1, 64))
    short_tail = draw(st.integers(0, segment_len - 1))
    tokens = split_segments((num_segments - 1) * segment_len + (short_tail or segment_len), segment_len)
    kind = draw(st.sampled_from(rules))
    if kind != "user":
        return build_cell_graph(num_layers, segment_tokens=tokens, rule=kind)
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    edges = random_forward_edges(num_layers, num_segments, rng)
    form = draw(st.sampled_from(("edges", "function", "networkx")))
    if form == "networkx":
        graph = build_cell_graph(num_layers, segment_tokens=tokens, rule=user_rule(edges, "edges")).to_networkx()
        return CellGraph.from_networkx(graph)
    return build_cell_graph(num_layers, segment_tokens=tokens, rule=user_rule(edges, form))


@dataclass(frozen=True)
class Placed:
    """A random valid schedule together with the rng that made it (for choosing mutations)."""

    schedule: Schedule
    graph: CellGraph
    rng: random.Random


@st.composite
def valid_schedules(draw: st.DrawFn, max_devices: int = 3, **graph_kwargs: object) -> Placed:
    graph = draw(cell_graphs(**graph_kwargs))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    num_devices = draw(st.integers(1, max_devices))
    return Placed(random_valid_schedule(graph, rng, num_devices, shuffle_transfers=True), graph, rng)


def step_of(schedule: Schedule) -> dict[Cell, int]:
    return {cell: index for index, step in enumerate(schedule.steps) for cell in step.cells}


def with_steps(schedule: Schedule, steps: list[Step], transfers: tuple[Transfer, ...] | None = None) -> Schedule:
    """A copy of ``schedule`` with other steps (and optionally other transfers)."""
    return Schedule(
        tuple(steps),
        schedule.transfers if transfers is None else transfers,
        schedule.scheduler,
        schedule.num_devices,
        dict(schedule.options),
    )
