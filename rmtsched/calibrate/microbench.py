"""Microbenchmarks of the PyTorch backend's own kernels and steps, each described as simulator work.

Every benchmark calls backend code the way the models call it (``RowMatmul`` GEMMs and attention over a
stack of layer rows, the associative-memory GEMMs and feature map, the element-wise kernels, a whole
``StepRunner.run_step``) on a grid of LLaMA-like shapes and step widths, and names the simulator
kernels (``rmtsched.specs.armt_cost``) that stand for that work. Suites are registered by name, so a
backend with other kernels can add its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import torch

from rmtsched.backends.torch import StepRunner, build_model, execute
from rmtsched.backends.torch.kernels import dpfp_features, l2_normalize, merge_heads, rms_norm, silu_mul
from rmtsched.backends.torch.rowmm import RowMatmul
from rmtsched.calibrate.device import Target
from rmtsched.sched import Cell, Schedule, build_cell_graph, make_schedule
from rmtsched.sim.workload import workload_from_spec
from rmtsched.specs.cost import KernelWork
from rmtsched.specs.model import ModelSpec


@dataclass(frozen=True)
class Grid:
    """The shapes and widths a calibration covers: one LLaMA-like spec per ``d_model``."""

    d_models: tuple[int, ...]
    widths: tuple[int, ...]
    segment_len: int = 64
    mem_tokens: int = 16
    stream_elements: int = 1 << 22
    kernel_widths: tuple[int, ...] | None = None
    run_layers: int = 8
    run_cells: int = 64

    @property
    def widths_for_kernels(self) -> tuple[int, ...]:
        return self.kernel_widths or self.widths


FULL_GRID = Grid(d_models=(64, 128, 256, 512), widths=(1, 2, 4, 8, 16), kernel_widths=(1, 4, 16))
QUICK_GRID = Grid(d_models=(32, 64), widths=(1, 2), stream_elements=1 << 16, run_layers=2, run_cells=4)
# A GPU needs LLaMA-sized shapes to leave the launch-bound regime: with the CPU grid's d <= 512 and 80-token
# cells every GEMM costs less than its launch, so the matmul rate and bandwidth cannot be told apart from it
# (measured on an H200: the CPU grid fitted 9 PFLOP/s and 84 TB/s). Streams of 2^27 elements are far
# larger than any GPU's L2.
CUDA_GRID = Grid(d_models=(256, 1024, 2048), widths=(1, 2, 4, 8, 16), kernel_widths=(1, 4, 16), segment_len=1024,
                 stream_elements=1 << 27)


def default_grid(device_type: str, quick: bool = False) -> Grid:
    """The grid ``rmtsched calibrate`` measures: coarse with ``quick``, LLaMA-sized on a GPU."""
    if quick:
        return QUICK_GRID
    return CUDA_GRID if device_type == "cuda" else FULL_GRID


def grid_spec(d_model: int, family: str, grid: Grid, num_layers: int, dtype_bytes: int) -> ModelSpec:
    """A LLaMA-shaped spec: head size 32 (at most 4 heads below d 128), MLP 4 d, d_mem d / 4 (16..64)."""
    heads = max(1, d_model // 32)
    return ModelSpec(
        name=f"calib-{family}-d{d_model}",
        family=family,
        num_layers=num_layers,
        d_model=d_model,
        num_heads=heads,
        num_kv_heads=heads,
        mlp_dim=4 * d_model,
        vocab_size=256,
        segment_len=grid.segment_len,
        mem_tokens=grid.mem_tokens,
        mem_key_dim=min(64, max(16, d_model // 4)),
        dtype_bytes=dtype_bytes,
    )


@dataclass(frozen=True)
class Bench:
    """One benchmark: ``setup()`` allocates and returns the call to time; the rest describes it
    (``steps``: the (width, count) steps of a whole schedule run, see ``Measurement``)."""

    name: str
    group: str
    kernels: tuple[KernelWork, ...]
    width: int
    setup: Callable[[], Callable[[], object]]
    layers: int | None = None
    steps: tuple[tuple[int, int], ...] | None = None


Suite = Callable[[Grid, Target], Iterator[Bench]]
_SUITES: dict[str, Suite] = {}


def register_suite(name: str) -> Callable[[Suite], Suite]:
    """Decorator: a generator of ``Bench`` objects run by ``rmtsched calibrate``."""

    def decorate(suite: Suite) -> Suite:
        _SUITES[name] = suite
        return suite

    return decorate


def available_suites() -> list[str]:
    return sorted(_SUITES)


# Suites ``rmtsched calibrate`` runs by default. ``step-rmt`` is left out: the simulator describes an RMT
# cell with fewer kernels relative to the backend's ops than an ARMT cell, so one launch overhead cannot
# fit both families (see bench/README.md); calibrate for RMT by passing it explicitly.
DEFAULT_SUITES = ("dispatch", "stream", "gemm", "attention", "assoc", "elementwise", "step-armt", "run")


def benches(grid: Grid, target: Target, suites: Sequence[str] | None = None) -> list[Bench]:
    """Every benchmark of ``suites`` (default: ``DEFAULT_SUITES``) on ``grid``."""
    names = list(DEFAULT_SUITES if suites is None else suites)
    unknown = set(names) - set(_SUITES)
    if unknown:
        raise ValueError(f"unknown benchmark suite(s) {sorted(unknown)}: expected some of {available_suites()}")
    return [bench for name in names for bench in _SUITES[name](grid, target)]


def _sim_kernels(spec: ModelSpec, *names: str) -> tuple[KernelWork, ...]:
    """The simulator's kernels of one cell of ``spec`` with these names, in the cell's order."""
    kernels = tuple(k for k in workload_from_spec(spec).cell_kernels(spec.segment_len) if k.name in names)
    if {k.name for k in kernels} != set(names):
        raise ValueError(f"the simulator's cell of {spec.name!r} lacks kernels {sorted(set(names))}")
    return kernels


def _randn(target: Target, *shape: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(hash(shape) & 0xFFFF)
    return (torch.randn(shape, generator=generator) * scale).to(device=target.device, dtype=target.dtype)


# -- suites -----------------------------------------------------------------------------------------


@register_suite("dispatch")
def dispatch_suite(grid: Grid, target: Target) -> Iterator[Bench]:
    """One tiny element-wise op: the per-call cost of Python + the dispatcher (+ a kernel launch)."""
    work = KernelWork("dispatch", 8, 0, 16 * target.dtype_bytes, matmul=False)
    yield Bench("dispatch", "kernel", (work,), 1, partial(_dispatch_call, target))


def _dispatch_call(target: Target) -> Callable[[], object]:
    x = torch.ones(8, device=target.device, dtype=target.dtype)
    return lambda: x.add_(0.0)


@register_suite("stream")
def stream_suite(grid: Grid, target: Target) -> Iterator[Bench]:
    """``out = a + b`` on arrays far larger than cache: memory bandwidth (3 arrays moved)."""
    n = grid.stream_elements
    work = KernelWork("stream", 0, 0, 3 * n * target.dtype_bytes, matmul=False)  # bytes only: a bandwidth probe
    yield Bench(f"stream-{n}", "stream", (work,), 1, partial(_stream_call, target, n))


def _stream_call(target: Target, n: int) -> Callable[[], object]:
    a, b = _randn(target, n), _randn(target, n)
    out = torch.empty_like(a)
    return lambda: torch.add(a, b, out=out)


_GEMMS = {  # simulator kernel -> (output features, input features) of the weight, from the spec
    "qkv_proj": lambda s: ((s.num_heads + 2 * s.num_kv_heads) * s.head_dim, s.d_model),
    "o_proj": lambda s: (s.d_model, s.num_heads * s.head_dim),
    "gate_up_proj": lambda s: (2 * s.mlp_dim, s.d_model),
    "down_proj": lambda s: (s.d_model, s.mlp_dim),
    "mem_read_key": lambda s: (s.mem_key_dim, s.d_model),
}


@register_suite("gemm")
def gemm_suite(grid: Grid, target: Target) -> Iterator[Bench]:
    """``RowMatmul.linear`` over w layer rows: the projections exactly as ``llama_layers`` calls them."""
    for d in grid.d_models:
        spec = grid_spec(d, "armt", grid, 1, target.dtype_bytes)
        tokens = spec.tokens_per_cell(spec.segment_len)
        for name, shape in _GEMMS.items():
            for w in grid.widths_for_kernels:
                call = partial(_linear_call, target, w, tokens, *shape(spec))
                yield Bench(f"{name}-d{d}-w{w}", "kernel", _sim_kernels(spec, name), w, call)


def _linear_call(target: Target, w: int, tokens: int, out_features: int, in_features: int) -> Callable[[], object]:
    matmul = RowMatmul("auto")
    x, weight = _randn(target, w, tokens, in_features), _randn(target, w, out_features, in_features, scale=0.02)
    return lambda: matmul.linear(x, weight)


@register_suite("attention")
def attention_suite(grid: Grid, target: Target) -> Iterator[Bench]:
    """Causal SDPA over the segment's and memory tokens as ``llama_layers`` runs it: ``RowMatmul.attention``
    (batched where probed exact) on head-transposed views of the packed QKV, then the heads merged."""
    for d in grid.d_models:
        spec = grid_spec(d, "armt", grid, 1, target.dtype_bytes)
        n = spec.tokens_per_cell(spec.segment_len)
        for w in grid.widths_for_kernels:
            call = partial(_attention_call, target, w, n, spec.num_heads, spec.num_kv_heads, spec.head_dim)
            yield Bench(f"attention-d{d}-w{w}", "kernel", _sim_kernels(spec, "attention"), w, call)


def _attention_call(target: Target, w: int, n: int, heads: int, kv_heads: int, head_dim: int) -> Callable[[], object]:
    matmul = RowMatmul("auto")
    qkv = _randn(target, w, 1, n, heads + 2 * kv_heads, head_dim)
    q = qkv[..., :heads, :].transpose(2, 3)
    k = qkv[..., heads : heads + kv_heads, :].transpose(2, 3)
    v = qkv[..., heads + kv_heads :, :].transpose(2, 3)
    return lambda: merge_heads(matmul.attention(q, k, v))


@register_suite("assoc")
def assoc_suite(grid: Grid, target: Target) -> Iterator[Bench]:
    """The associative memory's GEMMs and feature map: read ``phi @ [A|z]`` on all tokens, the write's
    ``[A|z] += phi^T update`` (``baddbmm_``) from the M memory tokens, and DPFP + L2 norm of the keys."""
    for d in grid.d_models:
        spec = grid_spec(d, "armt", grid, 1, target.dtype_bytes)
        n = spec.tokens_per_cell(spec.segment_len)
        for w in grid.widths_for_kernels:
            yield Bench(f"mem_read-d{d}-w{w}", "kernel", _sim_kernels(spec, "mem_read"), w,
                        partial(_assoc_read_call, target, w, n, spec.phi_dim, d))
            yield Bench(f"mem_write_update-d{d}-w{w}", "kernel", _sim_kernels(spec, "mem_write_update"), w,
                        partial(_assoc_update_call, target, w, spec.mem_tokens, spec.phi_dim, d))
            yield Bench(f"mem_read_phi-d{d}-w{w}", "kernel", _sim_kernels(spec, "mem_read_phi"), w,
                        partial(_features_call, target, w, n, spec.mem_key_dim, spec.dpfp_nu))


def _assoc_read_call(target: Target, w: int, rows: int, phi: int, d: int) -> Callable[[], object]:
    matmul = RowMatmul("auto")
    features, assoc = _randn(target, w, 1, rows, phi), _randn(target, w, 1, phi, d + 1)
    return lambda: matmul.batched(features, assoc)


def _assoc_update_call(target: Target, w: int, mem: int, phi: int, d: int) -> Callable[[], object]:
    matmul = RowMatmul("auto")
    assoc = _randn(target, w, 1, phi, d + 1)
    features_t = _randn(target, w, 1, mem, phi).transpose(2, 3)
    delta = _randn(target, w, 1, mem, d + 1, scale=1e-6)
    return lambda: matmul.accumulate_(assoc, features_t, delta)


def _features_call(target: Target, w: int, rows: int, key_dim: int, nu: int) -> Callable[[], object]:
    keys = _randn(target, w, 1, rows, key_dim)
    return lambda: l2_normalize(dpfp_features(keys, nu))  # as ARMTModel._features


@register_suite("elementwise")
def elementwise_suite(grid: Grid, target: Target) -> Iterator[Bench]:
    """RMSNorm and SwiGLU's ``silu(gate) * up`` batched over all rows of a step (one call each)."""
    for d in grid.d_models:
        spec = grid_spec(d, "armt", grid, 1, target.dtype_bytes)
        n = spec.tokens_per_cell(spec.segment_len)
        for w in grid.widths_for_kernels:
            yield Bench(f"attn_norm-d{d}-w{w}", "kernel", _sim_kernels(spec, "attn_norm"), w,
                        partial(_norm_call, target, w, n, d))
            yield Bench(f"swiglu-d{d}-w{w}", "kernel", _sim_kernels(spec, "swiglu"), w,
                        partial(_swiglu_call, target, w, n, spec.mlp_dim))


def _norm_call(target: Target, w: int, n: int, d: int) -> Callable[[], object]:
    x, weight = _randn(target, w, 1, n, d), _randn(target, w, 1, 1, d)
    return lambda: rms_norm(x, weight, 1e-5)


def _swiglu_call(target: Target, w: int, n: int, f: int) -> Callable[[], object]:
    gate_up = _randn(target, w, n, 2 * f)
    return lambda: silu_mul(gate_up[..., :f], gate_up[..., f:])


class _StepHarness:
    """A model of ``spec`` and a ``StepRunner`` on it, built on first use and shared by every width."""

    def __init__(self, spec: ModelSpec, target: Target):
        self.spec, self.target = spec, target
        self.runner: StepRunner | None = None

    def call(self, width: int) -> Callable[[], object]:
        """Run the step of cells (l, w - l) for l = 1..w, inputs put in place as their producers would."""
        spec, target = self.spec, self.target
        if self.runner is None:
            model = build_model(spec, seed=0, dtype=target.dtype, device=target.device)
            inputs = torch.zeros(1, spec.num_layers * spec.segment_len, dtype=torch.int64, device=target.device)
            self.runner = StepRunner(model, inputs)
        runner = self.runner
        cells = [Cell(layer, width - layer) for layer in range(1, width + 1)]
        hidden = _randn(target, width, 1, spec.tokens_per_cell(spec.segment_len), spec.d_model)

        def step() -> None:
            for cell, row in zip(cells, hidden.unbind(0), strict=True):
                runner.put(Cell(cell.layer - 1, cell.segment), row)
            runner.run_step(cells)
            runner.live.clear()

        return step


def _step_benches(family: str, grid: Grid, target: Target) -> Iterator[Bench]:
    """A whole executor step (``StepRunner.run_step``) of w cells on layers 1..w, as a diagonal step runs."""
    for d in grid.d_models:
        spec = grid_spec(d, family, grid, max(grid.widths) + 1, target.dtype_bytes)
        kernels = tuple(workload_from_spec(spec).cell_kernels(spec.segment_len))
        harness = _StepHarness(spec, target)
        for w in grid.widths:
            yield Bench(f"step-{family}-d{d}-w{w}", "step", kernels, w, partial(harness.call, w))


def _run_call(spec: ModelSpec, target: Target, schedule: Schedule) -> Callable[[], object]:
    model = build_model(spec, seed=0, dtype=target.dtype, device=target.device)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, spec.vocab_size, (1, schedule.num_cells // spec.num_layers * spec.segment_len),
                           generator=generator).to(target.device)
    execute(model, inputs, schedule, collect_outputs=False)  # validates once
    return lambda: execute(model, inputs, schedule, validate=False, collect_outputs=False)


@register_suite("run")
def run_suite(grid: Grid, target: Target) -> Iterator[Bench]:
    """Whole ``execute`` runs of the sequential and diagonal schedules on ARMT grid models: what steps
    cost inside the executor, with its per-step overhead and weights rotating through the layers."""
    layers = grid.run_layers
    for d in grid.d_models:
        spec = grid_spec(d, "armt", grid, layers, target.dtype_bytes)
        segments = max(2, grid.run_cells // (layers * max(1, d // 256)))  # fewer segments for the widest
        graph = build_cell_graph(layers, segment_tokens=(spec.segment_len,) * segments)
        kernels = tuple(workload_from_spec(spec).cell_kernels(spec.segment_len))
        for name in ("sequential", "diagonal"):
            schedule = make_schedule(graph, name)
            widths = Counter(len(step.cells) for step in schedule.steps)
            yield Bench(f"run-{name}-d{d}-L{layers}-S{segments}", "run", kernels, max(widths),
                        partial(_run_call, spec, target, schedule), steps=tuple(sorted(widths.items())))


@register_suite("step-armt")
def armt_step_suite(grid: Grid, target: Target) -> Iterator[Bench]:
    return _step_benches("armt", grid, target)


@register_suite("step-rmt")
def rmt_step_suite(grid: Grid, target: Target) -> Iterator[Bench]:
    return _step_benches("rmt", grid, target)


__all__ = [
    "CUDA_GRID",
    "DEFAULT_SUITES",
    "FULL_GRID",
    "QUICK_GRID",
    "Bench",
    "Grid",
    "available_suites",
    "benches",
    "default_grid",
    "grid_spec",
    "register_suite",
]
