"""The analytic engine: closed forms for the named schedules, equal to the event engine on the same costs.

All segments but the last have T tokens, so only a handful of distinct steps exist and sums collapse:
sequential = L ((S - 1) c(T) + c(t_last)); diagonal = sum over the waves t of the steps of wave t, with
the S - L identical full waves counted once and multiplied; pipelined is a flow shop of identical jobs
(segments) over machines (stages, with links as machines between them), whose makespan is
max over m of [A_m + (S - 2) max_{i <= m} a_i + sum_{i >= m} b_i] (a: full segment, b: last one,
A_m: prefix sum of a). Peak memory uses the same accounting as the event engine (``sim.memory``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rmtsched.errors import ScheduleError
from rmtsched.sched import Cell, CellGraph, GlobalMemoryRule, LayerLocalRule, SchedulerOptions
from rmtsched.sched.schedulers.ordering import chunks, require_single_device
from rmtsched.sched.schedulers.pipelined import pipeline_stages
from rmtsched.sim.cost import CostModel
from rmtsched.sim.memory import resident_bytes
from rmtsched.sim.result import SimResult

ClosedForm = Callable[[CellGraph, CostModel, SchedulerOptions], SimResult]
_FORMS: dict[str, ClosedForm] = {}


def register_closed_form(name: str) -> Callable[[ClosedForm], ClosedForm]:
    """Decorator: the closed form of scheduler ``name``."""

    def decorate(function: ClosedForm) -> ClosedForm:
        _FORMS[name] = function
        return function

    return decorate


def available_closed_forms() -> list[str]:
    return sorted(_FORMS)


def analytic_simulate(
    scheduler: str, graph: CellGraph, cost: CostModel, options: SchedulerOptions | None = None
) -> SimResult:
    """What ``simulate(make_schedule(graph, scheduler, ...), graph, cost)`` returns, without the schedule."""
    if scheduler not in _FORMS:
        raise ScheduleError(
            f"no closed form for scheduler {scheduler!r}: expected one of {available_closed_forms()} "
            "(use the des engine for others)"
        )
    if not isinstance(graph.rule, LayerLocalRule | GlobalMemoryRule):
        raise ScheduleError(
            f"closed forms cover the layer_local and global_memory rules, not {graph.rule.name!r}: use the des engine"
        )
    if len(set(graph.segment_tokens[:-1])) > 1 or graph.segment_tokens[-1] > graph.segment_tokens[0]:
        raise ScheduleError("closed forms need equal segments except a shorter last one: use the des engine")
    cost.require_layers(graph.num_layers)
    return _FORMS[scheduler](graph, cost, options or SchedulerOptions())


class _Grid:
    """The few numbers closed forms need: sizes, the two segment lengths and their cell costs."""

    def __init__(self, graph: CellGraph, cost: CostModel):
        self.graph, self.cost = graph, cost
        self.layers, self.segments = graph.num_layers, graph.num_segments
        self.full, self.last = graph.segment_tokens[0], graph.segment_tokens[-1]

    def tokens(self, segment: int) -> int:
        return self.last if segment == self.segments - 1 else self.full

    def cell_s(self, tokens: int) -> float:
        return self.cost.step_time_s([tokens])

    def cell_peak(self, tokens: int) -> float:
        """Transient bytes while one cell runs alone: its working set plus its input hidden state."""
        return self.cost.working_set_bytes(tokens) + self.cost.workload.hidden_bytes(tokens)

    def result(self, name: str, devices: int, steps: int, makespan: float, busy: list, peaks: list) -> SimResult:
        cells = self.layers * self.segments
        return SimResult(name, "analytic", devices, steps, cells, makespan, tuple(busy), tuple(peaks))


def _chain(name: str, grid: _Grid) -> SimResult:
    """One cell at a time on one device: the sequential schedule (and the diagonal one on global memory)."""
    makespan = grid.layers * ((grid.segments - 1) * grid.cell_s(grid.full) + grid.cell_s(grid.last))
    peak = resident_bytes(grid.cost, range(grid.layers), grid.full) + max(
        grid.cell_peak(grid.full), grid.cell_peak(grid.last)
    )
    return grid.result(name, 1, grid.layers * grid.segments, makespan, [makespan], [peak])


@register_closed_form("sequential")
def sequential_form(graph: CellGraph, cost: CostModel, options: SchedulerOptions) -> SimResult:
    """S * L steps of one cell: makespan L ((S - 1) c(T) + c(t_last)), no idle time."""
    require_single_device("sequential", options)
    return _chain("sequential", _Grid(graph, cost))


@register_closed_form("diagonal")
def diagonal_form(graph: CellGraph, cost: CostModel, options: SchedulerOptions) -> SimResult:
    """Sum over waves of their steps' times; on a global-memory DAG every wave is one cell (a chain)."""
    require_single_device("diagonal", options)
    grid = _Grid(graph, cost)
    if isinstance(graph.rule, GlobalMemoryRule):
        return _chain("diagonal", grid)
    layers, segments = grid.layers, grid.segments
    ramp_up = range(0, min(layers - 1, segments - 1))
    steady = range(layers - 1, segments - 1)
    with_last = range(segments - 1, segments + layers - 1)
    makespan, steps, transient = 0.0, 0, 0.0
    for t in (*ramp_up, *with_last):
        wave_s, wave_steps, wave_peak = _wave(grid, t, options.max_width)
        makespan, steps, transient = makespan + wave_s, steps + wave_steps, max(transient, wave_peak)
    if len(steady):
        wave_s, wave_steps, wave_peak = _wave(grid, steady.start, options.max_width)
        makespan, steps, transient = makespan + len(steady) * wave_s, steps + len(steady) * wave_steps, max(
            transient, wave_peak
        )
    peak = resident_bytes(cost, range(layers), grid.full) + transient
    return grid.result("diagonal", 1, steps, makespan, [makespan], [peak])


def _wave(grid: _Grid, t: int, max_width: int | None) -> tuple[float, int, float]:
    """Time, step count and transient peak of anti-diagonal ``t`` (split into steps of ``max_width``).

    Before its first step the wave's inputs (outputs of wave t - 1) are buffered; each step adds its
    working set while it runs, then frees its inputs and keeps its outputs for wave t + 1.
    """
    first = max(0, t - grid.segments + 1)
    cells = [Cell(layer, t - layer) for layer in range(first, min(grid.layers - 1, t) + 1)]
    hidden = grid.cost.workload.hidden_bytes
    buffered = sum(hidden(grid.tokens(cell.segment)) for cell in cells if cell.layer > 0)
    seconds, peak = 0.0, 0.0
    batches = chunks(cells, max_width)
    for batch in batches:
        profile = grid.cost.step_profile(batch, grid.graph.segment_tokens)
        peak = max(peak, buffered + profile.running_bytes)
        buffered += profile.produced_bytes - profile.consumed_bytes
        seconds += profile.duration_s
    return seconds, len(batches), peak


@register_closed_form("pipelined")
def pipelined_form(graph: CellGraph, cost: CostModel, options: SchedulerOptions) -> SimResult:
    """Flow shop of S segments over P stages and P - 1 links (global memory: one chain through all)."""
    grid = _Grid(graph, cost)
    devices = options.num_devices
    stages = pipeline_stages(grid.layers, options)
    sizes = np.array([len(stage) for stage in stages], dtype=float)
    full_cell, last_cell = grid.cell_s(grid.full), grid.cell_s(grid.last)
    hidden = cost.workload.hidden_bytes
    full_link = cost.hardware.transfer_time_s(hidden(grid.full))
    last_link = cost.hardware.transfer_time_s(hidden(grid.last))
    busy = list((grid.segments - 1) * sizes * full_cell + sizes * last_cell)
    steps = grid.layers * grid.segments
    if isinstance(graph.rule, GlobalMemoryRule):
        links_per_segment = devices - 1
        makespan = sum(busy) + (grid.segments - 1) * links_per_segment * full_link + links_per_segment * last_link
        if devices > 1:  # memory tokens return from the last stage to the first after every segment but the last
            makespan += (grid.segments - 1) * full_link
        transient = max(grid.cell_peak(grid.full), grid.cell_peak(grid.last))
        peaks = [resident_bytes(cost, stage, grid.full) + transient for stage in stages]
        return grid.result("pipelined", devices, steps, makespan, busy, peaks)
    full_jobs = np.empty(2 * devices - 1)
    last_job = np.empty(2 * devices - 1)
    full_jobs[0::2], last_job[0::2] = sizes * full_cell, sizes * last_cell
    full_jobs[1::2], last_job[1::2] = full_link, last_link
    finish = _flow_shop_finish(full_jobs, last_job, grid.segments)
    peaks = [
        resident_bytes(cost, stage, grid.full) + _stage_transient(grid, finish, p, len(stage), stage.start == 0)
        for p, stage in enumerate(stages)
    ]
    return grid.result("pipelined", devices, steps, float(finish[-1, -1]), busy, peaks)


def _flow_shop_finish(full_jobs: np.ndarray, last_job: np.ndarray, segments: int) -> np.ndarray:
    """Completion time of every segment on every machine, ``[machine, segment]``.

    Identical jobs: the longest path to (m, s) stays at the slowest machine so far for the s extra jobs,
    F[m, s] = A_m + s * max_{i <= m} a_i. The last job joins that path at some machine k <= m and
    finishes on its own: F[m, S - 1] = max over k <= m of F[k, S - 2] + sum_{k <= i <= m} b_i.
    """
    prefix = np.cumsum(full_jobs)
    slowest = np.maximum.accumulate(full_jobs)
    finish = prefix[:, None] + np.arange(segments)[None, :] * slowest[:, None]
    if segments == 1:
        finish[:, 0] = np.cumsum(last_job)
        return finish
    before_last = prefix + (segments - 2) * slowest
    last_prefix = np.concatenate([[0.0], np.cumsum(last_job)])
    for machine in range(len(full_jobs)):
        joins = before_last[: machine + 1] + (last_prefix[machine + 1] - last_prefix[: machine + 1])
        finish[machine, -1] = joins.max()
    return finish


def _stage_transient(grid: _Grid, finish: np.ndarray, stage: int, num_layers: int, has_layer_0: bool) -> float:
    """Peak transient bytes on one stage's device, evaluated at the first and last step of each segment.

    While a step runs the device holds its working set, its own input (from the previous layer, or the
    received one for the stage's first layer), and every received input of a later segment whose
    producer finished before the step ends. Steps after the first of a segment differ only in that
    count, which only grows, so the last step of the segment is the one to check.
    """
    segments, workload = grid.segments, grid.cost.workload
    is_last = np.arange(segments) == segments - 1
    hidden_full, hidden_last = workload.hidden_bytes(grid.full), workload.hidden_bytes(grid.last)
    hidden = np.where(is_last, hidden_last, hidden_full)
    working = np.where(is_last, grid.cost.working_set_bytes(grid.last), grid.cost.working_set_bytes(grid.full))
    cell = np.where(is_last, grid.cell_s(grid.last), grid.cell_s(grid.full))
    stage_end = finish[2 * stage]
    first_end = stage_end - (num_layers - 1) * cell

    def received(lowest: np.ndarray, before: np.ndarray) -> np.ndarray:
        """Bytes of inputs of segments >= ``lowest`` that arrived strictly before ``before``."""
        if stage == 0:
            return np.zeros(segments)
        arrived = np.searchsorted(finish[2 * stage - 2], before, side="left")
        count = np.maximum(0, arrived - lowest)
        return count * hidden_full + ((arrived == segments) & (count > 0)) * (hidden_last - hidden_full)

    own = np.arange(segments)
    peak = float((working + received(own, first_end) + (hidden if has_layer_0 else 0.0)).max())
    if num_layers > 1:
        peak = max(peak, float((working + hidden + received(own + 1, stage_end)).max()))
    return peak


__all__ = ["analytic_simulate", "available_closed_forms", "register_closed_form"]
