"""One timing loop: runs are bracketed by device syncs (measured with a fake asynchronous device whose
clock moves only when the host waits), schedules take turns, validation happens once outside the timing,
and ``execute``'s own ``wall_s`` waits for the device too."""

from __future__ import annotations

import types

import pytest
import torch

from rmtsched.backends.torch import build_model, execute, timing
from rmtsched.backends.torch import executor as executor_module
from rmtsched.errors import ScheduleError
from rmtsched.sched import Cell, Schedule, Step, build_cell_graph, graph_for_tokens, make_schedule
from rmtsched.specs.model import load_model_spec


class FakeDevice:
    """An asynchronous device: calls queue work; the host clock reaches its end only on ``synchronize``."""

    def __init__(self) -> None:
        self.now = 0.0
        self.queued = 0.0
        self.syncs: list[object] = []

    def clock(self) -> float:
        return self.now

    def enqueue(self, seconds: float) -> None:
        self.queued += seconds
        self.now += 0.001  # launching is cheap for the host

    def synchronize(self, device: object) -> None:
        self.syncs.append(device)
        self.now += self.queued
        self.queued = 0.0


@pytest.fixture
def device(monkeypatch: pytest.MonkeyPatch) -> FakeDevice:
    fake = FakeDevice()
    monkeypatch.setattr(timing, "synchronize", fake.synchronize)
    return fake


def test_time_calls_waits_for_the_device_and_interleaves(device: FakeDevice) -> None:
    order = []
    work = {"a": 2.0, "b": 3.0, "c": 5.0}
    calls = {name: (lambda index, name=name: (order.append((index, name)), device.enqueue(work[name])))
             for name in work}
    timings = timing.time_calls(calls, repeat=3, device="cuda", clock=device.clock)
    for name, seconds in work.items():  # each run measured to its end on the device, launch cost included
        assert timings[name].runs_s == pytest.approx((seconds + 0.001,) * 3)
        assert timings[name].median_s == pytest.approx(seconds + 0.001)
    assert [name for _, name in order] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # the first one rotates
    assert len(device.syncs) == 2 * 9 and set(device.syncs) == {"cuda"}


def test_time_calls_rejects_no_repeats() -> None:
    with pytest.raises(ValueError, match="repeat must be a positive integer, got 0"):
        timing.time_calls({"a": lambda index: None}, repeat=0)


def test_time_schedule_validates_once_then_times_each_run_with_its_callback() -> None:
    spec = load_model_spec("armt-tiny").replace(segment_len=4, mem_tokens=2)
    model = build_model(spec, seed=0)
    inputs = torch.randint(0, spec.vocab_size, (1, 18), generator=torch.Generator().manual_seed(0))
    graph = graph_for_tokens(spec, 18)
    plans = {name: make_schedule(graph, name) for name in ("sequential", "diagonal")}
    seen: dict[tuple[str, int], list[int]] = {}

    def outputs(name: str, index: int):
        return lambda segment, output: seen.setdefault((name, index), []).append(segment)

    timings = timing.time_schedule(model, inputs, plans, repeat=2, outputs=outputs)
    assert set(timings) == set(plans) and all(len(t.runs_s) == 2 and t.median_s > 0 for t in timings.values())
    assert seen == {(name, index): [0, 1, 2, 3, 4] for name in plans for index in range(2)}
    bad = Schedule(steps=(Step(cells=(Cell(0, 1),)),), scheduler="broken")  # segment 1 first, most cells never
    with pytest.raises(ScheduleError):
        timing.time_schedule(model, inputs, {"broken": bad}, warmup=False, outputs=outputs)
    assert len(seen) == 4  # nothing ran


def test_execute_wall_time_waits_for_the_device(device: FakeDevice, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ExecutionStats.wall_s`` is measured after a device sync (CUDA work is asynchronous)."""
    spec = load_model_spec("armt-tiny").replace(segment_len=4, mem_tokens=2)
    model = build_model(spec, seed=0)
    monkeypatch.setattr(executor_module, "synchronize", device.synchronize)
    monkeypatch.setattr(executor_module, "time", types.SimpleNamespace(perf_counter=device.clock))
    real_forward = model.forward_layers

    def queued_forward(hidden, layers, state):
        device.enqueue(0.5)
        return real_forward(hidden, layers, state)

    monkeypatch.setattr(model, "forward_layers", queued_forward)
    plan = make_schedule(build_cell_graph(spec.num_layers, 2), "sequential")
    result = execute(model, torch.zeros(1, 8, dtype=torch.long), plan)
    assert result.stats.forward_calls == 8
    assert result.stats.wall_s == pytest.approx(8 * 0.5 + 8 * 0.001)
    assert device.syncs == [model.device, model.device]


def test_synchronize_is_a_no_op_off_cuda() -> None:
    timing.synchronize(None)
    timing.synchronize("cpu")
    timing.synchronize(torch.device("cpu"))


@pytest.mark.cuda
def test_time_schedule_on_cuda_measures_the_device() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    spec = load_model_spec("armt-tiny")
    model = build_model(spec, seed=0, device="cuda")
    inputs = torch.randint(0, spec.vocab_size, (1, 512), generator=torch.Generator().manual_seed(0))
    plans = {"diagonal": make_schedule(graph_for_tokens(spec, 512), "diagonal")}
    wall = timing.time_schedule(model, inputs, plans, repeat=2)["diagonal"].median_s
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    execute(model, inputs, plans["diagonal"], validate=False, collect_outputs=False)
    end.record()
    torch.cuda.synchronize()
    assert wall >= 0.5 * start.elapsed_time(end) / 1e3  # host time covers the device's work
