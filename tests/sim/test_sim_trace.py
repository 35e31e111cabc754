"""Pictures of a run: the Chrome trace has one event per step on its device's track; the Gantt chart renders."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from sim_helpers import synthetic_workload, unit_hardware

from rmtsched.errors import RmtschedError
from rmtsched.sched import CellGraph, make_schedule
from rmtsched.sim import CostModel, analytic_simulate, simulate
from rmtsched.sim.trace import chrome_trace, plot_gantt, write_chrome_trace


@pytest.mark.parametrize(("scheduler", "devices"), [("sequential", 1), ("diagonal", 1), ("pipelined", 3)])
def test_trace_json_loads_with_one_event_per_step_per_device(tmp_path: Path, scheduler: str, devices: int) -> None:
    graph = CellGraph(6, (8,) * 5 + (3,))
    cost = CostModel(synthetic_workload(6, 2, 1), unit_hardware(launch=1, latency=2))
    schedule = make_schedule(graph, scheduler, num_devices=devices)
    result = simulate(schedule, graph, cost)
    path = tmp_path / "trace.json"
    write_chrome_trace(result, path)
    trace = json.loads(path.read_text())
    steps = [e for e in trace["traceEvents"] if e.get("cat") == "step"]
    assert Counter(e["tid"] for e in steps) == Counter(step.device for step in schedule.steps)
    assert sorted(e["args"]["step"] for e in steps) == list(range(schedule.num_steps))
    names = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and "tid" in e}
    assert [names[d] for d in range(devices)] == [f"device {d}" for d in range(devices)]
    transfers = [e for e in trace["traceEvents"] if e.get("cat") == "transfer"]
    assert len(transfers) == len(schedule.transfers)
    assert not set(e["tid"] for e in transfers) & set(range(devices))  # links have their own tracks
    end_us = max(e["ts"] + e["dur"] for e in steps)
    assert end_us == pytest.approx(result.makespan_s * 1e6)


def test_gantt_png_is_written(tmp_path: Path) -> None:
    graph = CellGraph(4, (8,) * 6)
    cost = CostModel(synthetic_workload(4, 2, 1), unit_hardware(launch=1))
    result = simulate(make_schedule(graph, "pipelined", num_devices=2), graph, cost)
    path = tmp_path / "gantt.png"
    plot_gantt(result, path, title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_analytic_results_have_no_timeline_to_draw() -> None:
    graph = CellGraph(2, (4, 4))
    result = analytic_simulate("sequential", graph, CostModel(synthetic_workload(2, 1, 1), unit_hardware()))
    with pytest.raises(RmtschedError, match="des engine"):
        chrome_trace(result)


def test_one_device_trace_has_a_track_per_layer_with_each_cell_spanning_its_step() -> None:
    graph = CellGraph(4, (8,) * 8)
    cost = CostModel(synthetic_workload(4, 2, 1), unit_hardware(launch=1))
    schedule = make_schedule(graph, "diagonal")
    trace = chrome_trace(simulate(schedule, graph, cost))
    names = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    cells = [e for e in trace["traceEvents"] if e.get("cat") == "cell"]
    steps = {e["args"]["step"]: e for e in trace["traceEvents"] if e.get("cat") == "step"}
    assert len(cells) == graph.num_cells and sorted(set(names.values())) == ["device 0"] + [
        f"layer {layer}" for layer in range(4)]
    for event in cells:
        layer, segment = (int(x) for x in event["name"][len("cell ("):-1].split(", "))
        step = steps[event["args"]["step"]]
        assert names[event["tid"]] == f"layer {layer}" and layer + segment == event["args"]["step"]  # the wavefront
        assert (event["ts"], event["dur"]) == (step["ts"], step["dur"])
    assert steps[3]["name"] == "step 3 (w=4)"
