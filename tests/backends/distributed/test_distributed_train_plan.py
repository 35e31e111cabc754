"""Training rank plans (no processes): the values the plan says cross cells are exactly those a one-process
``TrainRunner`` passes through its mailbox, each crossing joins two devices, and fold ownership is right."""

from __future__ import annotations

import pytest
import torch
from train_helpers import batch, pipelined, segments_alternating, tiny_model, train_graph

from rmtsched.backends.distributed.comm import KINDS, message_tag
from rmtsched.backends.distributed.train_plan import build_train_plans, value_flows
from rmtsched.backends.torch.threads import intra_op_threads
from rmtsched.backends.torch.train_executor import TrainRunner
from rmtsched.sched import Cell, Phase, TrainCell


class RecordingRunner(TrainRunner):
    """A one-process runner that records every mailbox value it passes: (kind, cell, writer, reader)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.node: TrainCell | None = None
        self.writers: dict[tuple[str, Cell], TrainCell] = {}
        self.flows: set[tuple[str, Cell, TrainCell, TrainCell]] = set()

    def groups(self, cells, phase):
        """One cell per group, so each put and take happens while exactly one cell runs."""
        return [[cell] for cell in cells]

    def forward(self, cells):
        self.node = TrainCell(Phase.FORWARD, *cells[0])
        super().forward(cells)

    def _backward_group(self, graph):
        self.node = TrainCell(Phase.BACKWARD, *graph.cells[0])
        super()._backward_group(graph)

    def put(self, kind, cell, value):
        self.writers[(kind, cell)] = self.node
        super().put(kind, cell, value)

    def take(self, kind, cell, *, required=True):
        value = super().take(kind, cell, required=required)
        if value is not None:
            self.flows.add((kind, cell, self.writers[(kind, cell)], self.node))
        return value


@pytest.mark.parametrize(("family", "truncation"), [("armt", None), ("armt", 2), ("rmt", None), ("rmt", 2)])
def test_planned_values_are_exactly_what_one_process_passes(family, truncation):
    model = tiny_model(family)
    graph = train_graph(model, truncation)
    runner = RecordingRunner(model, *batch(model), graph, pipelined(graph, 2))
    with intra_op_threads(1):
        for index in range(runner.schedule.num_steps):
            runner.run_step(index)
    planned = set(value_flows(graph, model.uses_previous_output))
    # RMT carries no memory state between segments: those planned values are announced absent at run time.
    stateless = {flow for flow in planned if flow[0] in ("state", "grad_state")} if family == "rmt" else set()
    assert runner.flows == planned - stateless
    assert not runner.mailbox  # every value passed was taken


@pytest.mark.parametrize("make_schedule", [lambda g: pipelined(g, 3), segments_alternating])
def test_each_crossing_is_sent_after_its_writer_and_received_before_its_reader_on_the_other_rank(make_schedule):
    model = tiny_model("rmt")
    graph = train_graph(model, None)
    schedule = make_schedule(graph)
    plans = build_train_plans(schedule, graph, model.uses_previous_output)
    device_of = {node: step.device for step in schedule.steps for node in step.nodes()}
    step_of = {node: index for index, step in enumerate(schedule.steps) for node in step.nodes()}
    expected_sends, expected_receives = set(), set()
    for kind, cell, writer, reader in value_flows(graph, model.uses_previous_output):
        if device_of[writer] != device_of[reader]:
            expected_sends.add((device_of[writer], step_of[writer], kind, cell, device_of[reader]))
            expected_receives.add((device_of[reader], step_of[reader], kind, cell, device_of[writer]))
    sends = {(p.rank, i, c.kind, c.cell, c.peer) for p in plans for i, cs in p.sends.items() for c in cs}
    receives = {(p.rank, i, c.kind, c.cell, c.peer) for p in plans for i, cs in p.receives.items() for c in cs}
    assert sends == expected_sends and receives == expected_receives and sends
    for plan in plans:
        assert set(plan.sends) | set(plan.receives) <= set(plan.steps)
        assert list(plan.steps) == [i for i, step in enumerate(schedule.steps) if step.device == plan.rank]


def test_pipelined_stages_share_only_the_global_weights():
    model = tiny_model("armt")
    graph = train_graph(model, None)
    first, middle, last = build_train_plans(pipelined(graph, 3), graph, model.uses_previous_output)
    assert first.shared_folds == last.shared_folds == {None} and middle.shared_folds == set()
    assert (first.owned_folds, middle.owned_folds, last.owned_folds) == ({0}, {1}, {2})


def test_alternating_segments_share_every_fold():
    model = tiny_model("armt")
    graph = train_graph(model, None)
    plans = build_train_plans(segments_alternating(graph), graph, model.uses_previous_output)
    assert all(plan.shared_folds == {None, 0, 1, 2} and not plan.owned_folds for plan in plans)


def test_message_tags_are_distinct_and_the_forward_pipelines_are_unchanged():
    layers, segments = 3, 4
    cells = [Cell(layer, segment) for layer in range(layers) for segment in range(segments)]
    tags = [message_tag(kind, cell, layers, segments, header) for kind in KINDS for cell in cells
            for header in (True, False)]  # fmt: skip
    assert len(set(tags)) == len(tags)
    # The forward pipeline's tags (hidden states only) are what they were: 2 (l S + s) + (0 header, 1 payload).
    assert [message_tag("hidden", cell, layers, segments, False) for cell in cells] == [
        2 * (cell.layer * segments + cell.segment) + 1 for cell in cells
    ]


def test_stages_cover_every_step_once():
    model = tiny_model("armt", dtype=torch.float64)
    graph = train_graph(model, 2)
    schedule = pipelined(graph, 2)
    plans = build_train_plans(schedule, graph, model.uses_previous_output)
    assert sorted(index for plan in plans for index in plan.steps) == list(range(schedule.num_steps))
