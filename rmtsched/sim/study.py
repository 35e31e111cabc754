"""A what-if study: one model, one sequence length, one hardware, several schedules plus the baseline.

This is what ``rmtsched simulate`` runs: build the cell graph of the model for N tokens, cost it on the
hardware, simulate each schedule with the chosen engine, and simulate the full-attention LLaMA on one
device so speedups can be quoted against it. Results say whether each run fits in device memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rmtsched.errors import ScheduleError, SpecError
from rmtsched.sched import CellGraph, SchedulerOptions, available_schedulers, graph_for_tokens, make_schedule
from rmtsched.sim.analytic import analytic_simulate, available_closed_forms
from rmtsched.sim.cost import CostModel
from rmtsched.sim.engine import simulate
from rmtsched.sim.result import SimResult
from rmtsched.sim.workload import Workload, full_attention_workload, with_batch, workload_from_spec
from rmtsched.specs.armt_cost import total_flops
from rmtsched.specs.hardware import HardwareSpec
from rmtsched.specs.model import ModelSpec

# The baseline's name wherever it stands beside the schedulers (simulate, run, compare); it is no scheduler.
FULL_ATTENTION = "full-attention"


def _run_des(name: str, graph: CellGraph, cost: CostModel, options: SchedulerOptions) -> SimResult:
    schedule = make_schedule(
        graph, name, max_width=options.max_width, num_devices=options.num_devices, layer_costs=options.layer_costs
    )
    return simulate(schedule, graph, cost)


def _run_analytic(name: str, graph: CellGraph, cost: CostModel, options: SchedulerOptions) -> SimResult:
    """The closed form where the scheduler has one, else the event engine (the result's ``engine`` says which)."""
    if name in available_closed_forms():
        return analytic_simulate(name, graph, cost, options)
    return _run_des(name, graph, cost, options)


ENGINES: dict[str, Callable[[str, CellGraph, CostModel, SchedulerOptions], SimResult]] = {
    "des": _run_des,
    "analytic": _run_analytic,
}


@dataclass(frozen=True)
class StudyRun:
    """One schedule's result in a study, with whether its busiest device fits in memory."""

    schedule: str
    result: SimResult
    fits_in_memory: bool


@dataclass(frozen=True)
class Study:
    """The runs of a study, the full-attention baseline, and what was studied."""

    spec: ModelSpec
    hardware: HardwareSpec
    seq_len: int
    graph: CellGraph
    engine: str
    max_width: int | None
    runs: tuple[StudyRun, ...]
    full_attention: StudyRun
    batch_size: int = 1

    def run(self, schedule: str) -> StudyRun | None:
        return next((run for run in self.runs if run.schedule == schedule), None)

    @property
    def memory_state_bytes(self) -> float:
        """The recurrent state the model keeps over the whole sequence (ARMT: L x (A_l, z_l) per sequence)."""
        return self.graph.num_layers * workload_from_spec(self.spec).state_bytes_per_layer * self.batch_size

    @property
    def kv_cache_bytes(self) -> float:
        """The full-attention baseline's state after reading the input: K and V of every token, every layer."""
        return self.spec.num_layers * full_attention_workload(self.spec, self.seq_len).state_bytes_per_layer * (
            self.batch_size
        )


def accepts_devices(name: str, num_devices: int) -> bool:
    """Whether scheduler ``name`` can spread a run over ``num_devices`` (tried on a grid of one layer a device)."""
    try:
        make_schedule(CellGraph(num_devices, (1, 1), "layer_local"), name, num_devices=num_devices)
    except ScheduleError:
        return False
    return True


def schedules_for(name: str, num_devices: int) -> tuple[tuple[str, int], ...]:
    """(scheduler, devices) pairs. ``all``: every registered scheduler, sequential and diagonal first, each on
    ``num_devices`` where it accepts them (pipelined) and on one device otherwise; a single name runs on
    ``num_devices``."""
    if name != "all":
        return ((name, num_devices),)
    first = ("sequential", "diagonal")
    names = [*first, *(n for n in available_schedulers() if n not in first)]
    return tuple((n, num_devices if num_devices > 1 and accepts_devices(n, num_devices) else 1) for n in names)


def run_study(
    spec: ModelSpec,
    hardware: HardwareSpec,
    seq_len: int,
    schedules: Sequence[tuple[str, int]],
    *,
    max_width: int | None = None,
    engine: str = "des",
    batch_size: int = 1,
) -> Study:
    """Simulate each (scheduler, devices) pair of ``schedules`` for ``spec`` on ``seq_len`` tokens, each cell
    running ``batch_size`` sequences at once."""
    if engine not in ENGINES:
        raise SpecError(f"unknown engine {engine!r}: expected one of {sorted(ENGINES)}")
    for _, devices in schedules:
        if devices > hardware.num_devices:
            raise SpecError(f"hardware {hardware.name!r} has {hardware.num_devices} devices, asked for {devices}")
    graph = graph_for_tokens(spec, seq_len)
    cost = CostModel(with_batch(workload_from_spec(spec), batch_size), hardware)
    layer_costs = (cost.cell_time_s(spec.segment_len),) * spec.num_layers
    runs = []
    for name, devices in schedules:
        options = SchedulerOptions(max_width=max_width, num_devices=devices, layer_costs=layer_costs)
        result = ENGINES[engine](name, graph, cost, options)
        runs.append(StudyRun(name, result, result.max_peak_memory_bytes <= hardware.memory_bytes))
    baseline = full_attention(spec, hardware, seq_len, batch_size)
    return Study(spec, hardware, seq_len, graph, engine, max_width, tuple(runs), baseline, batch_size)


def full_attention_problem(spec: ModelSpec, seq_len: int, batch_size: int = 1) -> tuple[Workload, CellGraph]:
    """The baseline as the simulator sees it: the LLaMA without memory, one cell per layer on all N tokens."""
    workload = with_batch(full_attention_workload(spec, seq_len), batch_size)
    return workload, CellGraph(spec.num_layers, (seq_len,), "layer_local")


def full_attention(spec: ModelSpec, hardware: HardwareSpec, seq_len: int, batch_size: int = 1) -> StudyRun:
    """The same LLaMA without memory on all ``seq_len`` tokens on one device: L layer steps in a row."""
    workload, graph = full_attention_problem(spec, seq_len, batch_size)
    result = analytic_simulate("sequential", graph, CostModel(workload, hardware))
    return StudyRun(FULL_ATTENTION, result, result.max_peak_memory_bytes <= hardware.memory_bytes)


def graph_flops(workload: Workload, graph: CellGraph) -> float:
    """FLOPs of every cell of ``graph`` as ``workload`` counts them (every layer runs the same kernels)."""
    per_segment = {tokens: total_flops(workload.cell_kernels(tokens)) for tokens in set(graph.segment_tokens)}
    return graph.num_layers * sum(per_segment[tokens] for tokens in graph.segment_tokens)


def run_flops(spec: ModelSpec, seq_len: int, *, full_attention: bool = False, batch_size: int = 1) -> float:
    """The work of one pass over ``seq_len`` tokens by the cost model: every ARMT/RMT cell of the segmented
    input, or (``full_attention``) the baseline's L layers on all N tokens. LM head and embedding excluded."""
    if full_attention:
        return graph_flops(*full_attention_problem(spec, seq_len, batch_size))
    return graph_flops(with_batch(workload_from_spec(spec), batch_size), graph_for_tokens(spec, seq_len))


__all__ = [
    "ENGINES",
    "FULL_ATTENTION",
    "Study",
    "StudyRun",
    "accepts_devices",
    "full_attention",
    "full_attention_problem",
    "graph_flops",
    "run_flops",
    "run_study",
    "schedules_for",
]
