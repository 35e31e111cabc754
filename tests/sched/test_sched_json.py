"""Schedules survive JSON, a person can hand-write one, and malformed JSON says which field is wrong."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sched_strategies import FAST, SCHEDULERS, Placed, cell_graphs, valid_schedules

from rmtsched.errors import ScheduleError
from rmtsched.sched import Cell, Schedule, Step, Transfer, build_cell_graph, make_schedule, validate
from rmtsched.sched.validate import DependencyError


@FAST
@given(cell_graphs(), st.sampled_from(SCHEDULERS), st.data())
def test_every_scheduler_output_round_trips_through_json(graph, name: str, data: st.DataObject) -> None:
    options = {"num_devices": data.draw(st.integers(1, graph.num_layers))} if name == "pipelined" else {}
    schedule = make_schedule(graph, name, **options)
    back = Schedule.from_json(schedule.to_json())
    assert back == schedule
    assert all(type(cell) is Cell for cell in back.cells())
    validate(back, graph)


@FAST
@given(valid_schedules(max_devices=3))
def test_random_multi_device_schedules_round_trip_with_transfers(placed: Placed) -> None:
    back = Schedule.from_json(placed.schedule.to_json(indent=2))
    assert back == placed.schedule
    assert back.transfers == placed.schedule.transfers


def test_to_dict_has_the_documented_keys() -> None:
    graph = build_cell_graph(2, 3)
    data = make_schedule(graph, "diagonal").to_dict()
    assert data["scheduler"] == "diagonal"
    assert data["num_steps"] == 4 == len(data["steps"])
    assert data["steps"] == [[[0, 0]], [[0, 1], [1, 0]], [[0, 2], [1, 1]], [[1, 2]]]
    assert data["step_devices"] == [0, 0, 0, 0] and data["transfers"] == []
    json.dumps(data)  # plain JSON types only


def test_a_hand_written_schedule_with_only_steps_is_accepted() -> None:
    text = '{"steps": [[[0, 0]], [[1, 0], [0, 1]], [[1, 1]]]}'
    schedule = Schedule.from_json(text)
    assert schedule.num_devices == 1 and schedule.scheduler == "custom"
    assert [step.device for step in schedule.steps] == [0, 0, 0]
    validate(schedule, build_cell_graph(2, 2))
    with pytest.raises(DependencyError, match=r"cell \(1, 0\)"):
        validate(Schedule.from_json('{"steps": [[[1, 0], [0, 0]], [[0, 1]], [[1, 1]]]}'), build_cell_graph(2, 2))


def test_a_hand_written_two_device_schedule_with_a_transfer() -> None:
    text = json.dumps(
        {
            "steps": [[[0, 0]], [[1, 0]], [[0, 1]], [[1, 1]]],
            "step_devices": [0, 1, 0, 1],
            "transfers": [{"cell": [0, 0], "src": 0, "dst": 1}, {"cell": [0, 1], "src": 0, "dst": 1}],
        }
    )
    schedule = Schedule.from_json(text)
    assert schedule.num_devices == 2
    assert schedule.transfers[0] == Transfer(Cell(0, 0), 0, 1)
    validate(schedule, build_cell_graph(2, 2))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "schedule is not valid JSON"),
        ("[1, 2]", "a schedule must be a JSON object with a 'steps' list"),
        ('{"step": []}', "a schedule must be a JSON object with a 'steps' list"),
        ('{"steps": 5}', "steps: expected a list, got 5"),
        ('{"steps": ["ab"]}', r"steps\[0\]: expected a list, got 'ab'"),
        ('{"steps": [[[0]]]}', r"steps\[0\]: \[0\] is not a cell: expected \[layer, segment\] integers"),
        ('{"steps": [[[0, 1.5]]]}', r"steps\[0\]: \[0, 1.5\] is not a cell"),
        ('{"steps": [[[0, true]]]}', r"steps\[0\]: \[0, True\] is not a cell"),
        ('{"steps": [[[0, 0]]], "step_devices": [0, 1]}', "step_devices has 2 entries for 1 steps"),
        ('{"steps": [[[0, 0]]], "step_devices": ["a"]}', r"step_devices\[0\]: expected an integer, got 'a'"),
        ('{"steps": [[[0, 0]]], "step_devices": 3}', "step_devices: expected a list, got 3"),
        ('{"steps": [[[0, 0]]], "transfers": [3]}', r"transfers\[0\]: expected an object with 'cell', 'src'"),
        ('{"steps": [[[0, 0]]], "transfers": [{"cell": [0, 0]}]}', r"transfers\[0\]: expected an object"),
        (
            '{"steps": [[[0, 0]]], "transfers": [{"cell": [0, 0], "src": "x", "dst": 0}]}',
            r"transfers\[0\].src: expected an integer, got 'x'",
        ),
        ('{"steps": [[[0, 0]]], "transfers": [{"cell": 7, "src": 0, "dst": 0}]}', r"transfers\[0\].cell: 7"),
        ('{"steps": [[[0, 0]]], "num_devices": "two"}', "num_devices: expected an integer, got 'two'"),
        ('{"steps": [[[0, 0]]], "options": [1]}', r"options: expected a JSON object, got \[1\]"),
    ],
)
def test_malformed_json_is_a_schedule_error_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        Schedule.from_json(text)


def test_schedules_are_immutable() -> None:
    schedule = Schedule((Step((Cell(0, 0),)),))
    with pytest.raises(AttributeError):
        schedule.steps = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        schedule.steps[0].device = 1  # type: ignore[misc]
