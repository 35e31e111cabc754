"""The discrete-event engine (simpy): any valid schedule, any cost model, any number of devices.

Each device is one simpy process that runs its steps in schedule order; each link (one per ordered
device pair) is a process serving a FIFO ``simpy.Store`` of transfers, one at a time, each for latency +
bytes / bandwidth. A device yields to simpy only where devices interact: before a step that waits for a
transfer, and after a step whose output must be sent. Between those points its steps run back to back,
so their times are summed locally instead of each costing a simpy event; that is what lets a
million-step single-device schedule simulate in seconds while the multi-device case stays a real DES.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import simpy

from rmtsched.errors import ScheduleError
from rmtsched.sched import Cell, CellGraph, Schedule, validate
from rmtsched.sim.cost import CostModel
from rmtsched.sim.memory import peak_transient_bytes, resident_bytes
from rmtsched.sim.result import SimResult, Timeline, TransferRecord


@dataclass
class _Plan:
    """Per-step numbers and the cross-device wiring, computed once before the event loop."""

    duration: list[float]
    running: np.ndarray
    consumed: np.ndarray
    produced: np.ndarray
    device_steps: list[list[int]]
    device_layers: list[set[int]]
    incoming: dict[int, list[int]]
    outgoing: dict[int, list[int]]
    remote_outputs: list[tuple[int, int, float]]  # (producing step, consumer device, bytes)


def simulate(schedule: Schedule, graph: CellGraph, cost: CostModel, *, check: bool = True) -> SimResult:
    """Run ``schedule`` on ``graph`` through the event engine; ``check`` validates the schedule first."""
    if check:
        validate(schedule, graph)
    cost.require_layers(graph.num_layers)
    plan = _plan(schedule, graph, cost)
    run = _EventLoop(schedule, graph, cost, plan)
    run.env.run()
    if not all(run.finished):
        stuck = [d for d, done in enumerate(run.finished) if not done]
        raise ScheduleError(f"devices {stuck} never finished: the schedule's transfers form a wait cycle")
    return _result(schedule, graph, cost, plan, np.array(run.start), np.array(run.end), run.transfer_times)


class _EventLoop:
    """The simpy model: one process per device, one per link; records when every step and transfer ran."""

    def __init__(self, schedule: Schedule, graph: CellGraph, cost: CostModel, plan: _Plan):
        self.schedule, self.graph, self.cost, self.plan = schedule, graph, cost, plan
        self.env = simpy.Environment()
        self.start = [0.0] * schedule.num_steps
        self.end = [0.0] * schedule.num_steps
        self.transfer_times = [[0.0, 0.0] for _ in schedule.transfers]
        self.arrived = [self.env.event() for _ in schedule.transfers]
        self.finished = [False] * schedule.num_devices
        self.queues: dict[tuple[int, int], simpy.Store] = {}
        for item in schedule.transfers:
            pair = (item.src_device, item.dst_device)
            if pair not in self.queues:
                self.queues[pair] = simpy.Store(self.env)
                self.env.process(self.link(self.queues[pair]))
        for number in range(schedule.num_devices):
            self.env.process(self.device(number))

    def link(self, queue: simpy.Store) -> Generator[simpy.Event, object, None]:
        """Carries the transfers handed to it one at a time, in the order they were sent."""
        env, hidden_bytes = self.env, self.cost.workload.hidden_bytes
        while True:
            index = yield queue.get()
            cell = self.schedule.transfers[index].cell
            self.transfer_times[index][0] = env.now
            yield env.timeout(self.cost.hardware.transfer_time_s(hidden_bytes(self.graph.tokens(cell))))
            self.transfer_times[index][1] = env.now
            self.arrived[index].succeed()

    def device(self, number: int) -> Generator[simpy.Event, object, None]:
        """Runs the device's steps in order; yields only to wait for a transfer or to send one."""
        env, plan, arrived, start, end = self.env, self.plan, self.arrived, self.start, self.end
        duration, incoming, outgoing = plan.duration, plan.incoming, plan.outgoing
        clock = 0.0
        for k in plan.device_steps[number]:
            waits = incoming.get(k)
            if waits:
                yield arrived[waits[0]] if len(waits) == 1 else env.all_of([arrived[i] for i in waits])
                clock = max(clock, max(self.transfer_times[i][1] for i in waits))
            start[k] = clock
            clock += duration[k]
            end[k] = clock
            sends = outgoing.get(k)
            if sends:
                yield env.timeout(max(0.0, clock - env.now))
                for i in sends:
                    item = self.schedule.transfers[i]
                    self.queues[(item.src_device, item.dst_device)].put(i)
        yield env.timeout(max(0.0, clock - env.now))
        self.finished[number] = True


def _plan(schedule: Schedule, graph: CellGraph, cost: CostModel) -> _Plan:
    num_steps, num_devices = schedule.num_steps, schedule.num_devices
    tokens, last = graph.segment_tokens, graph.num_layers - 1
    duration = [0.0] * num_steps
    running, consumed, produced = np.zeros(num_steps), np.zeros(num_steps), np.zeros(num_steps)
    device_steps: list[list[int]] = [[] for _ in range(num_devices)]
    device_layers: list[set[int]] = [set() for _ in range(num_devices)]
    single: dict[tuple[int, bool, bool], tuple[float, float, float, float]] = {}
    for k, step in enumerate(schedule.steps):
        cells = step.cells
        if len(cells) == 1:  # fast path: most steps of long schedules are single cells of a few shapes
            layer, segment = cells[0]
            key = (tokens[segment], layer == 0, layer == last)
            profile = single.get(key)
            if profile is None:
                profile = single[key] = cost.step_profile(cells, tokens)
            device_layers[step.device].add(layer)
        else:
            profile = cost.step_profile(cells, tokens)
            device_layers[step.device].update(cell.layer for cell in cells)
        duration[k], running[k], consumed[k], produced[k] = profile
        device_steps[step.device].append(k)
    plan = _Plan(duration, running, consumed, produced, device_steps, device_layers, {}, {}, [])
    if num_devices > 1:
        _wire_devices(schedule, graph, cost, plan)
    return plan


def _wire_devices(schedule: Schedule, graph: CellGraph, cost: CostModel, plan: _Plan) -> None:
    """Which steps wait for which transfers, which steps send, and outputs consumed on another device."""
    placed: dict[Cell, tuple[int, int]] = {}
    for k, step in enumerate(schedule.steps):
        for cell in step.cells:
            placed[cell] = (k, step.device)
    index_of = {(t.cell, t.src_device, t.dst_device): i for i, t in enumerate(schedule.transfers)}
    for i, item in enumerate(schedule.transfers):
        plan.outgoing.setdefault(placed[item.cell][0], []).append(i)
    last = graph.num_layers - 1
    for k, step in enumerate(schedule.steps):
        waits: set[int] = set()
        for cell in step.cells:
            for pred in graph.predecessors(cell):
                pred_device = placed[pred][1]
                if pred_device != step.device:
                    key = (pred, pred_device, step.device)
                    if key not in index_of:
                        raise ScheduleError(f"edge {tuple(pred)} -> {tuple(cell)} crosses devices with no transfer")
                    waits.add(index_of[key])
            if cell.layer < last:
                consumer_device = placed[Cell(cell.layer + 1, cell.segment)][1]
                if consumer_device != step.device:
                    size = cost.workload.hidden_bytes(graph.tokens(cell))
                    plan.produced[k] -= size
                    plan.remote_outputs.append((k, consumer_device, size))
        if waits:
            plan.incoming[k] = sorted(waits)


def _result(
    schedule: Schedule,
    graph: CellGraph,
    cost: CostModel,
    plan: _Plan,
    start: np.ndarray,
    end: np.ndarray,
    transfer_times: list[list[float]],
) -> SimResult:
    durations = np.asarray(plan.duration)
    max_tokens = max(graph.segment_tokens)
    remote = np.array(plan.remote_outputs, dtype=float).reshape(-1, 3)
    busy, peaks = [], []
    for number, steps in enumerate(plan.device_steps):
        index = np.asarray(steps, dtype=np.int64)
        incoming = remote[remote[:, 1] == number]
        times = np.concatenate([start[index], end[index], end[index], end[incoming[:, 0].astype(np.int64)]])
        deltas = np.concatenate([
            plan.running[index],
            -(plan.running[index] + plan.consumed[index]),
            plan.produced[index],
            incoming[:, 2],
        ])
        busy.append(float(durations[index].sum()))
        peaks.append(resident_bytes(cost, plan.device_layers[number], max_tokens) + peak_transient_bytes(times, deltas))
    transfers = tuple(
        TransferRecord(t.cell, t.src_device, t.dst_device, times[0], times[1])
        for t, times in zip(schedule.transfers, transfer_times, strict=True)
    )
    return SimResult(
        scheduler=schedule.scheduler,
        engine="des",
        num_devices=schedule.num_devices,
        num_steps=schedule.num_steps,
        num_cells=schedule.num_cells,
        makespan_s=float(max(end.max(initial=0.0), max((t.end_s for t in transfers), default=0.0))),
        busy_s=tuple(busy),
        peak_memory_bytes=tuple(peaks),
        timeline=Timeline(schedule, start, end, transfers),
    )


__all__ = ["simulate"]
