"""Shared by the plug-in tests: load an example by path, list every schedule of a graph, run and compare.

``examples/`` is not a package, so the examples are imported from their files; ``every_schedule`` gives
each registered scheduler (with the option variants it accepts) plus random valid schedules, the
schedules every plug-in must run bit-exactly.
"""

from __future__ import annotations

import importlib
import math
import random
import sys
from pathlib import Path
from types import ModuleType

import torch
from hypothesis import HealthCheck, settings

from rmtsched.backends.protocol import RecurrentModel
from rmtsched.backends.torch import execute
from rmtsched.errors import ScheduleError
from rmtsched.sched import (
    Cell,
    CellGraph,
    Schedule,
    SchedulerOptions,
    Step,
    Transfer,
    available_schedulers,
    make_schedule,
)
from rmtsched.sim import CostModel, analytic_simulate, simulate, workload_from_model
from rmtsched.specs.hardware import load_hardware_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Small counts: each example runs ~10 schedules of a tiny model; the whole folder stays well under 90 s.
FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OPTION_VARIANTS = ({}, {"max_width": 2}, {"num_devices": 2})


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` by its plain name, with ``examples/`` on ``sys.path``: worker processes
    of the distributed executor must be able to import a plug-in's factory by name."""
    if str(EXAMPLES) not in sys.path:
        sys.path.append(str(EXAMPLES))
    return importlib.import_module(name)


def random_valid_schedule(graph: CellGraph, rng: random.Random, num_devices: int = 1) -> Schedule:
    """A random topological schedule: each step is a random batch of ready cells on a random device,
    with a transfer for every edge that crosses devices."""
    remaining = {cell: len(graph.predecessors(cell)) for cell in graph.cells()}
    ready = [cell for cell, count in remaining.items() if count == 0]
    steps: list[Step] = []
    device_of: dict[Cell, int] = {}
    while ready:
        rng.shuffle(ready)
        width = rng.randint(1, len(ready))
        batch, ready = ready[:width], ready[width:]
        device = rng.randrange(num_devices)
        steps.append(Step(tuple(batch), device))
        for cell in batch:
            device_of[cell] = device
            for successor in graph.successors(cell):
                remaining[successor] -= 1
                if remaining[successor] == 0:
                    ready.append(successor)
    transfers = dict.fromkeys(
        Transfer(source, device_of[source], device_of[target])
        for source, target in graph.edges()
        if device_of[source] != device_of[target]
    )
    return Schedule(tuple(steps), tuple(transfers), "random", num_devices)


def every_schedule(graph: CellGraph, seed: int, random_count: int = 2) -> dict[str, Schedule]:
    """Every registered scheduler under each option variant it accepts, plus ``random_count`` random ones."""
    schedules: dict[str, Schedule] = {}
    for name in available_schedulers():
        for options in OPTION_VARIANTS:
            try:
                schedule = make_schedule(graph, name, **options)
            except ScheduleError:
                continue  # e.g. a single-device scheduler asked for two devices
            schedules[f"{name}{options or ''}"] = schedule
    rng = random.Random(seed)
    for index in range(random_count):
        schedules[f"random{index}"] = random_valid_schedule(graph, rng, num_devices=1 + index % 2)
    return schedules


def run(model: RecurrentModel, inputs: torch.Tensor, schedule: Schedule) -> tuple[list[torch.Tensor], dict]:
    """Segment outputs and final state of ``model`` on ``inputs`` under ``schedule`` (validated)."""
    result = execute(model, inputs, schedule)
    return result.outputs, result.final_state


def assert_bit_equal(got: tuple[list[torch.Tensor], dict], expected: tuple[list[torch.Tensor], dict], label: str):
    """Outputs and every state tensor identical, bit for bit (``torch.equal``), with a useful message."""
    outputs, state = got
    ref_outputs, ref_state = expected
    assert len(outputs) == len(ref_outputs), label
    for segment, (a, b) in enumerate(zip(outputs, ref_outputs, strict=True)):
        assert torch.equal(a, b), f"{label}: segment {segment} differs, max |diff| {(a - b).abs().max().item():.3g}"
    assert state.keys() == ref_state.keys(), label
    for key, value in ref_state.items():
        assert torch.equal(state[key], value), f"{label}: final state {key!r} differs"


def random_inputs(num_tokens: int, vocab_size: int, batch: int, seed: int) -> torch.Tensor:
    return torch.randint(0, vocab_size, (batch, num_tokens), generator=torch.Generator().manual_seed(seed))


def check_simulation(model: RecurrentModel, graph: CellGraph, hardware_name: str = "h100-sxm") -> dict[str, float]:
    """Simulate ``model`` on ``graph`` from its ``cell_kernels``; assert the simulator's laws; return makespans.

    Laws: every makespan is positive; the event engine equals the closed form for sequential, diagonal
    and 2-stage pipelined schedules; diagonal beats sequential (launches and weight reads amortised).
    """
    hardware = load_hardware_spec(hardware_name)
    cost = CostModel(workload_from_model(model, name=type(model).__name__, dtype_bytes=4), hardware)
    makespans = {}
    for name, options in (("sequential", {}), ("diagonal", {}), ("pipelined", {"num_devices": 2})):
        des = simulate(make_schedule(graph, name, **options), graph, cost)
        closed = analytic_simulate(name, graph, cost, SchedulerOptions(**options))
        assert des.makespan_s > 0, name
        assert math.isclose(des.makespan_s, closed.makespan_s, rel_tol=1e-9), (name, des.makespan_s, closed.makespan_s)
        makespans[name] = des.makespan_s
    assert makespans["diagonal"] < makespans["sequential"], makespans
    return makespans
