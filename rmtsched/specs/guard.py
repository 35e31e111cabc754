"""The size guard: estimate the cells, memory and time of a request before building anything, and refuse one
that cannot fit on this machine (``--force`` overrides).

Without it ``--seq-len 10000000000`` or a 10^9-cell grid runs until memory runs out, minutes later and
with a MemoryError or the OOM killer instead of an answer. The estimates are deliberately simple and a
little generous: a grid costs a measured number of bytes and seconds per cell (``rmtsched schedule`` and
``simulate`` hold the DAG, the schedule and the simulation's arrays); a backend run costs its weights,
recurrent state, token ids, kept outputs and one full-width step's activations (``specs/armt_cost.py``
gives the FLOPs). Torch-free, so the instant commands can call it.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

from rmtsched.errors import RmtschedError
from rmtsched.specs.armt_cost import armt_cell_kernels, full_attention_layer_kernels, total_flops
from rmtsched.specs.model import ModelSpec
from rmtsched.specs.run import FULL_ATTENTION_CHUNK_TOKENS

# Measured on the project's 2-core machine (Python 3.11, `rmtsched simulate` of armt-small on 4,194,304
# tokens = 1M cells): peak RSS 0.24 GB (diagonal) and 0.52 GB (sequential, or all three schedules: they
# run one after another) over a 0.05 GB interpreter; 1.4-2.4 s per schedule. Rounded up a little.
GRID_BYTES_PER_CELL = 500.0
GRID_SECONDS_PER_CELL = 2.5e-6
INTERPRETER_BYTES = 0.2e9  # Python with numpy, networkx and simpy loaded
BACKEND_BYTES = 0.6e9  # the same with torch loaded and its thread pools started
# The backend's rate for the time estimate: a rough CPU GEMM rate (cpu-generic's peak x efficiency).
BACKEND_FLOPS_PER_S = 6e10
# A decoding step runs each layer on one token: Python dispatch, about 0.6 ms per layer on the project machine
# (bench/README.md, "Generation speed").
DECODE_SECONDS_PER_LAYER = 6e-4
# Longer than this is refused too: nobody means to start a run that outlives the machine's next reboot.
MAX_SECONDS = 7 * 86400.0
DTYPE_BYTES = {"fp64": 8, "fp32": 4, "bf16": 2, "fp16": 2}
logger = logging.getLogger(__name__)
_ADVICE = "ask for less (a shorter --seq-len, fewer segments) or pass --force to try anyway"


class RequestTooLarge(RmtschedError):
    """The size guard's estimate says the request cannot fit in this machine's memory (or time)."""


@dataclass(frozen=True)
class Estimate:
    """What a request would take: cells of the grid, bytes of memory at peak, seconds of work."""

    what: str
    cells: int
    memory_bytes: float
    seconds: float

    def describe(self) -> str:
        return (f"{self.what}: {self.cells:,} cells, about {_bytes(self.memory_bytes)} of memory and "
                f"{_duration(self.seconds)}")


def grid_estimate(what: str, num_layers: int, num_segments: int, schedules: int = 1) -> Estimate:
    """An L x S grid built, then scheduled and validated or simulated ``schedules`` times one after another
    (``schedule``, ``simulate``): the memory of one, the time of all."""
    cells = num_layers * num_segments
    return Estimate(what, cells, INTERPRETER_BYTES + GRID_BYTES_PER_CELL * cells,
                    GRID_SECONDS_PER_CELL * cells * max(1, schedules))


def model_bytes(spec: ModelSpec, dtype_bytes: int) -> float:
    """Parameters and recurrent state of ``spec`` in a ``dtype_bytes`` dtype (design notes sections 3-4)."""
    d, kv, f, dm, phi = spec.d_model, spec.kv_dim, spec.mlp_dim, spec.mem_key_dim, spec.phi_dim
    layer = d * (d + 2 * kv) + d * d + 3 * d * f + 2 * d
    if spec.family == "armt":
        layer += 2 * dm * d + d * d + d + 1 + phi * d + phi  # W_mq, W_mk, W_mv, W_mb and the state (A, z)
    heads = (1 if spec.tie_word_embeddings else 2) * spec.vocab_size * d
    return float(dtype_bytes * (spec.num_layers * layer + heads + d + spec.mem_tokens * d))


def run_estimate(
    spec: ModelSpec, seq_len: int, dtype: str, *, runs: int = 1, kept_outputs: int = 0, verb: str = "running"
) -> Estimate:
    """``runs`` passes of ``spec`` over ``seq_len`` tokens on the backend, keeping ``kept_outputs`` full copies
    of the outputs (``verify`` keeps the reference and one schedule's; ``run`` streams them into a hash)."""
    what = f"{verb} {spec.name} on {seq_len:,} tokens"
    if dtype not in DTYPE_BYTES:
        raise RmtschedError(f"unknown dtype {dtype!r}: expected one of {sorted(DTYPE_BYTES)}")
    b = DTYPE_BYTES[dtype]
    segments = math.ceil(seq_len / spec.segment_len)
    cells = spec.num_layers * segments
    n = spec.tokens_per_cell(spec.segment_len)
    # One full-width step: every layer's cell with its hidden states, q/k/v, MLP and attention scores live.
    step = spec.num_layers * n * (6 * spec.d_model + 3 * spec.mlp_dim + spec.num_heads * n) * b
    outputs = kept_outputs * seq_len * spec.d_model * b
    memory = BACKEND_BYTES + GRID_BYTES_PER_CELL * cells + model_bytes(spec, b) + step + 8 * seq_len + outputs
    seconds = runs * cells * total_flops(armt_cell_kernels(spec, spec.segment_len)) / BACKEND_FLOPS_PER_S
    return Estimate(what, cells, memory, seconds)


def generate_estimate(spec: ModelSpec, prompt_tokens: int, new_tokens: int, dtype: str) -> Estimate:
    """Generation: one pass over the prompt (``run_estimate``), then ``new_tokens`` decoding steps, each running
    every layer on one token against a KV cache of the last segment and the tokens so far; a decoding step
    is dispatch-bound (``DECODE_SECONDS_PER_LAYER`` per layer), its cache grows by one token per layer."""
    prompt = run_estimate(spec, prompt_tokens, dtype, verb="generating after")
    b = DTYPE_BYTES[dtype]
    cache = 2 * spec.num_layers * (spec.tokens_per_cell(spec.segment_len) + new_tokens) * spec.kv_dim * b
    per_token = spec.num_layers * DECODE_SECONDS_PER_LAYER + total_flops(armt_cell_kernels(spec, 1)) * spec.num_layers \
        / BACKEND_FLOPS_PER_S
    what = f"generating {new_tokens:,} tokens with {spec.name} after {prompt_tokens:,}"
    return Estimate(what, prompt.cells, prompt.memory_bytes + cache + 8 * new_tokens,
                    prompt.seconds + new_tokens * per_token)


def full_attention_estimate(
    spec: ModelSpec, seq_len: int, dtype: str, chunk_tokens: int | None = None, *, runs: int = 1,
    verb: str = "running",
) -> Estimate:
    """``runs`` passes of the full-attention baseline (``spec``'s LLaMA without memory) over ``seq_len`` tokens,
    ``chunk_tokens`` at a time: the KV cache of every layer, one chunk's activations and its attention scores
    against the whole cache (an unfused attention holds them), and the N^2 work. "Cells" are layer x chunk;
``chunk_tokens`` None is the baseline's default chunk."""
    what = f"{verb} {spec.name} with full attention on {seq_len:,} tokens"
    if dtype not in DTYPE_BYTES:
        raise RmtschedError(f"unknown dtype {dtype!r}: expected one of {sorted(DTYPE_BYTES)}")
    b = DTYPE_BYTES[dtype]
    chunk = min(FULL_ATTENTION_CHUNK_TOKENS if chunk_tokens is None else chunk_tokens, seq_len)
    cache = 2 * spec.num_layers * seq_len * spec.kv_dim * b
    activations = chunk * (6 * spec.d_model + 3 * spec.mlp_dim + spec.num_heads * seq_len) * b
    memory = BACKEND_BYTES + model_bytes(spec, b) + cache + activations + 8 * seq_len
    flops = spec.num_layers * total_flops(full_attention_layer_kernels(spec, seq_len))
    return Estimate(what, spec.num_layers * math.ceil(seq_len / chunk), memory, runs * flops / BACKEND_FLOPS_PER_S)


def available_memory_bytes() -> float | None:
    """Memory a new allocation can get now: MemAvailable on Linux, else physical memory, else None."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(estimate: Estimate, *, force: bool = False, available_bytes: float | None = None) -> Estimate:
    """``estimate`` if it fits in ``available_bytes`` (default: this machine's) and ``MAX_SECONDS``; else
    ``RequestTooLarge`` with the estimate in the message. ``force`` skips the check."""
    logger.info("size guard: %s%s", estimate.describe(), " (not checked: --force)" if force else "")
    if force:
        return estimate
    available = available_memory_bytes() if available_bytes is None else available_bytes
    if available is not None and estimate.memory_bytes > available:
        raise RequestTooLarge(
            f"request too large for this machine: {estimate.describe()}, but only {_bytes(available)} of "
            f"memory is available; {_ADVICE}"
        )
    if estimate.seconds > MAX_SECONDS:
        raise RequestTooLarge(
            f"request too long for this machine: {estimate.describe()} (the limit is "
            f"{_duration(MAX_SECONDS)}); {_ADVICE}"
        )
    return estimate


def _bytes(value: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if value >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value / 1e3:,.1f} kB"


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.2g} s"


__all__ = ["Estimate", "RequestTooLarge", "available_memory_bytes", "check_fits", "full_attention_estimate",
           "grid_estimate", "model_bytes", "run_estimate"]
