"""A real run's trace (executor step hook + StepRecorder) names, counts and tracks its steps like the simulator's."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from rmtsched.backends.torch import build_model, execute
from rmtsched.errors import RmtschedError
from rmtsched.sched import graph_for_tokens, make_schedule
from rmtsched.sim import CostModel, simulate, workload_from_spec
from rmtsched.sim.stepwise import compare_steps
from rmtsched.sim.trace import StepRecorder, chrome_trace
from rmtsched.specs.hardware import load_hardware_spec
from rmtsched.specs.model import load_model_spec


def _signature(trace: dict) -> Counter:
    """What must match between traces: every span's name, category and track, and the track names."""
    spans = Counter((e["name"], e["cat"], e["tid"]) for e in trace["traceEvents"] if e["ph"] == "X"
                    and e["cat"] != "transfer")
    tracks = Counter((e["tid"], e["args"]["name"]) for e in trace["traceEvents"] if e["name"] == "thread_name"
                     and e["tid"] < 1000)
    return spans + tracks


@pytest.mark.parametrize(("scheduler", "devices"), [("sequential", 1), ("diagonal", 1), ("pipelined", 2)])
def test_real_run_trace_matches_the_simulated_one(tmp_path: Path, scheduler: str, devices: int) -> None:
    spec = load_model_spec("armt-tiny")
    seq_len = 8 * spec.segment_len
    graph = graph_for_tokens(spec, seq_len)
    schedule = make_schedule(graph, scheduler, num_devices=devices)
    model = build_model(spec, seed=3)
    inputs = torch.randint(0, spec.vocab_size, (1, seq_len), generator=torch.Generator().manual_seed(0))
    recorder = StepRecorder()
    execute(model, inputs, schedule, on_step=recorder, collect_outputs=False)
    recorder.write(schedule, tmp_path / "run.json")
    real = json.loads((tmp_path / "run.json").read_text())  # Perfetto reads the same JSON
    simulated = chrome_trace(simulate(schedule, graph, CostModel(workload_from_spec(spec),
                                                                 load_hardware_spec("cpu-generic"))))
    assert _signature(real) == _signature(simulated)
    steps = [e for e in real["traceEvents"] if e.get("cat") == "step"]
    assert [e["args"]["step"] for e in steps] == list(range(schedule.num_steps))
    assert steps[0]["ts"] == 0.0
    for before, after in itertools.pairwise(steps):  # one process: steps in order, never overlapping
        assert before["dur"] > 0 and before["ts"] + before["dur"] <= after["ts"]


def test_a_recorder_that_saw_another_run_is_refused() -> None:
    spec = load_model_spec("armt-tiny")
    graph = graph_for_tokens(spec, 2 * spec.segment_len)
    with pytest.raises(RmtschedError, match="recorded 0 step starts and 0 ends for a schedule of 5 steps"):
        StepRecorder().trace(make_schedule(graph, "diagonal"))


def test_the_sync_runs_before_every_clock_read() -> None:
    calls: list[str] = []
    ticks = iter(range(10))
    recorder = StepRecorder(sync=lambda: calls.append("sync"), clock=lambda: float(next(ticks)))
    recorder(0, "start")
    recorder(0, "end")
    assert calls == ["sync", "sync"] and (recorder.start_s, recorder.end_s) == ([0.0], [1.0])


def test_steps_compare_per_width_with_median_and_worst_error() -> None:
    graph = graph_for_tokens(load_model_spec("armt-tiny"), 3 * 64)  # 4 layers x 3 segments: widths 1, 2, 3
    schedule = make_schedule(graph, "diagonal")
    spec = load_model_spec("armt-tiny")
    timeline = simulate(schedule, graph, CostModel(workload_from_spec(spec), load_hardware_spec("h200"))).timeline
    predicted = timeline.step_end_s - timeline.step_start_s
    widths = [step.width for step in schedule.steps]
    assert widths == [1, 2, 3, 3, 2, 1]
    factors = [1.0, 2.0, 1.25, 1.0, 2.0, 0.5]  # measured = predicted * factor
    start = [0.0] * 6
    rows = compare_steps(timeline, start, [p * f for p, f in zip(predicted, factors, strict=True)])
    assert [(r.width, r.steps) for r in rows] == [(1, 2), (2, 2), (3, 2)]
    assert rows[0].median_error == pytest.approx((0.0 + 1.0) / 2) and rows[0].worst_error == pytest.approx(1.0)
    assert rows[1].median_error == pytest.approx(-0.5) and rows[1].measured_median_s == pytest.approx(2 * predicted[1])
    assert rows[2].worst_error == pytest.approx(-0.2)
    with pytest.raises(RmtschedError, match="5 measured starts"):
        compare_steps(timeline, start[:5], start[:5])
