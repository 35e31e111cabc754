"""Training schedulers: every one produces a valid schedule on any DAG, and each keeps its own promise.

Laws: every registered training scheduler is valid on random graphs (built-in and user rules, truncated
or not); diagonal takes 2 (S + L - 1) steps on layer-local memory; checkpointed never holds more cells'
activations than its budget; sequential is the segment-major forward then its exact reverse.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sched_strategies import FAST, cell_graphs

from rmtsched.errors import ScheduleError
from rmtsched.sched import (
    Cell,
    Phase,
    TrainGraph,
    TrainSchedule,
    available_train_schedulers,
    build_cell_graph,
    make_train_schedule,
    register_train_scheduler,
    validate_train,
)
from rmtsched.sched.train_schedulers.diagonal import diagonal


@FAST
@given(graph=cell_graphs(max_layers=5, max_segments=8), truncation=st.one_of(st.none(), st.integers(1, 9)),
       max_width=st.one_of(st.none(), st.integers(1, 4)), data=st.data())
def test_every_training_scheduler_gives_a_valid_schedule(graph, truncation, max_width, data) -> None:
    train = TrainGraph(graph, truncation)
    for name in available_train_schedulers():
        options = {"max_width": max_width}
        if name == "pipelined":
            options["num_devices"] = data.draw(st.integers(1, min(3, graph.num_layers)))
        if name == "checkpointed":
            widest = make_train_schedule(train, "diagonal", max_width=max_width).max_width  # a user DAG's waves
            options["memory_budget"] = data.draw(st.integers(widest, graph.num_cells + 2))  # may exceed L
        schedule = make_train_schedule(train, name, **options)
        validate_train(schedule, train)
        assert TrainSchedule.from_json(schedule.to_json()) == schedule
        if max_width is not None:
            assert schedule.max_width <= max_width


@FAST
@given(num_layers=st.integers(1, 6), num_segments=st.integers(1, 12), budget_extra=st.integers(0, 40),
       max_width=st.one_of(st.none(), st.integers(1, 3)))
def test_checkpointed_never_holds_more_activations_than_its_budget(
    num_layers: int, num_segments: int, budget_extra: int, max_width: int | None
) -> None:
    train = TrainGraph(build_cell_graph(num_layers, num_segments))
    widest = min(num_layers, num_segments, max_width or num_layers)
    budget = widest + budget_extra
    schedule = make_train_schedule(train, "checkpointed", memory_budget=budget, max_width=max_width)
    validate_train(schedule, train)
    assert max(schedule.held_activations()) <= budget
    if budget >= train.forward.num_cells:
        assert not schedule.recomputed


@pytest.mark.parametrize(("num_layers", "num_segments"), [(1, 1), (3, 5), (4, 2)])
def test_diagonal_training_takes_two_passes_of_s_plus_l_minus_1_waves(num_layers: int, num_segments: int) -> None:
    train = TrainGraph(build_cell_graph(num_layers, num_segments))
    schedule = make_train_schedule(train, "diagonal")
    assert schedule.num_steps == 2 * (num_layers + num_segments - 1)
    for step in schedule.steps:  # forward step t holds l + s = t; backward mirrors it
        assert len({cell.layer + cell.segment for cell in step.cells}) == 1
    assert [step.cells for step in schedule.steps[: schedule.num_steps // 2]] == [
        step.cells for step in reversed(schedule.steps[schedule.num_steps // 2 :])
    ]


def test_sequential_is_segment_major_forward_then_the_exact_reverse() -> None:
    train = TrainGraph(build_cell_graph(2, 3))
    schedule = make_train_schedule(train, "sequential")
    order = [Cell(layer, segment) for segment in range(3) for layer in range(2)]
    assert [(step.phase, step.cells) for step in schedule.steps] == [
        *((Phase.FORWARD, (cell,)) for cell in order),
        *((Phase.BACKWARD, (cell,)) for cell in reversed(order)),
    ]


def test_a_budget_below_one_step_is_refused_naming_both_numbers() -> None:
    train = TrainGraph(build_cell_graph(4, 6))
    with pytest.raises(ScheduleError, match="memory_budget=3 cells cannot hold one step of 4 cells"):
        make_train_schedule(train, "checkpointed", memory_budget=3)
    assert max(make_train_schedule(train, "checkpointed", memory_budget=3, max_width=3).held_activations()) <= 3


@pytest.mark.parametrize("name", ["sequential", "diagonal", "greedy"])
def test_schedulers_that_keep_every_activation_refuse_a_budget(name: str) -> None:
    with pytest.raises(ScheduleError, match=f"{name!r} keeps every activation and takes no memory_budget"):
        make_train_schedule(TrainGraph(build_cell_graph(2, 2)), name, memory_budget=4)


@pytest.mark.parametrize(
    ("option", "bad", "message"),
    [("max_width", 0, "max_width must be a positive integer or None"),
     ("memory_budget", -2, "memory_budget must be a positive integer or None"),
     ("memory_budget", True, "memory_budget must be a positive integer or None"),
     ("num_devices", 0, "number of devices must be a positive integer")],
)
def test_bad_options_are_refused_naming_the_value(option: str, bad: object, message: str) -> None:
    with pytest.raises(ScheduleError, match=f"{message}, got {bad!r}"):
        make_train_schedule(TrainGraph(build_cell_graph(2, 2)), "diagonal", **{option: bad})


def test_unknown_scheduler_names_the_choices() -> None:
    with pytest.raises(ScheduleError, match=r"unknown training scheduler 'nope': expected one of \['checkpointed'"):
        make_train_schedule(TrainGraph(build_cell_graph(2, 2)), "nope")


def test_a_user_registered_training_scheduler_is_found_by_name() -> None:
    register_train_scheduler("test-mirror")(diagonal)  # dropped after the test by tests/conftest.py
    train = TrainGraph(build_cell_graph(2, 3))
    validate_train(make_train_schedule(train, "test-mirror"), train)


@pytest.mark.parametrize("rule", ["layer_local", "global_memory"])
def test_pipelined_keeps_each_stage_on_its_device_and_transfers_exactly_the_boundary_edges(rule: str) -> None:
    train = TrainGraph(build_cell_graph(5, 4, rule=rule), truncation=2)
    schedule = make_train_schedule(train, "pipelined", num_devices=2)
    validate_train(schedule, train)
    stage = {layer: 0 if layer < 3 else 1 for layer in range(5)}  # 5 uniform layers: 3 + 2
    assert all(step.device == stage[cell.layer] for step in schedule.steps for cell in step.cells)
    crossing = {
        (pred, stage[pred.layer], stage[node.layer])
        for node in train.cells() for pred in train.predecessors(node) if stage[pred.layer] != stage[node.layer]
    }
    assert {(t.node, t.src_device, t.dst_device) for t in schedule.transfers} == crossing
    assert len(schedule.transfers) == len(crossing)


def test_pipelined_interleaves_backward_with_forward_when_truncation_allows() -> None:
    train = TrainGraph(build_cell_graph(4, 6), truncation=1)
    schedule = make_train_schedule(train, "pipelined", num_devices=2)
    phases = [step.phase for step in schedule.steps]
    last_forward = max(i for i, phase in enumerate(phases) if phase is Phase.FORWARD)
    first_backward = phases.index(Phase.BACKWARD)
    assert first_backward < last_forward
    full = make_train_schedule(TrainGraph(build_cell_graph(4, 6)), "pipelined", num_devices=2)
    full_phases = [step.phase for step in full.steps]
    # full BPTT: no B is ready before the last segment's forward, which is the last F of all
    assert full_phases.index(Phase.BACKWARD) > max(i for i, p in enumerate(full_phases) if p is Phase.FORWARD)


@pytest.mark.parametrize("name", ["sequential", "diagonal", "greedy", "checkpointed"])
def test_single_device_training_schedulers_refuse_several_devices(name: str) -> None:
    with pytest.raises(ScheduleError, match=f"{name!r} runs on one device, got num_devices=2"):
        make_train_schedule(TrainGraph(build_cell_graph(2, 2)), name, num_devices=2)
