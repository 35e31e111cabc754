"""What ``rmtsched run``, ``verify`` and the Python API share: a model (seeded, or from a checkpoint)
on a device with a record of where its weights came from, seeded inputs, a streaming output hash that
also counts non-finite values, peak memory, and the list of schedules to verify.

Checkpoints load through ``rmtsched.backends.torch.checkpoint.load_model``; timing lives in ``timing.py``.
"""

from __future__ import annotations

import hashlib
import resource
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.checkpoint import load_model as load_checkpoint_model
from rmtsched.backends.torch.models import DTYPES, build_model, parse_dtype
from rmtsched.errors import SpecError
from rmtsched.sched import CellGraph, Schedule, available_schedulers, make_schedule
from rmtsched.specs.model import ModelSpec
from rmtsched.specs.run import DEVICE_DTYPES


def resolve_device(device: str, dtype_name: str) -> tuple[torch.device, torch.dtype]:
    """Check the device exists and supports the dtype (fp32/fp64 on CPU; fp32/bf16/fp16 on CUDA)."""
    if device not in DEVICE_DTYPES:
        raise SpecError(f"unknown device {device!r}: expected one of {sorted(DEVICE_DTYPES)}")
    dtype = parse_dtype(dtype_name)
    if dtype_name not in DEVICE_DTYPES[device]:
        raise SpecError(f"dtype {dtype_name} is not supported on {device}: expected one of {DEVICE_DTYPES[device]}")
    if device == "cuda" and not torch.cuda.is_available():
        raise SpecError("device 'cuda' requested but torch reports no CUDA device")
    return torch.device(device), dtype


def load_model(
    spec: ModelSpec | None, *, checkpoint: Path | None, seed: int, dtype: torch.dtype, device: torch.device | str,
    matmul: str = "auto", spec_overrides: Mapping[str, Any] | None = None, init_memory: str | None = None,
) -> StackedModel:
    """A seeded random model of ``spec`` (with ``spec_overrides``), or the checkpoint in ``checkpoint``.

    With a checkpoint, ``spec`` (None: the checkpoint's own, then changed by the overrides) goes to the
    checkpoint loader, which checks it against the weights; ``init_memory="seed"`` lets it draw missing ARMT
    memory weights from ``seed``. The model's ``weight_sources`` says where each weight came from.
    """
    if spec is not None:  # a given spec takes the run's choices itself; the loader checks it against the weights
        spec, spec_overrides = spec.replace(**(spec_overrides or {})), None
    if checkpoint is None:
        if spec is None:
            raise SpecError("no model spec and no checkpoint: expected a model preset, a spec file or a checkpoint")
        model = build_model(spec, seed=seed, dtype=dtype, device=device, matmul=matmul)
        if getattr(model, "weight_sources", None) is None:
            model.weight_sources = dict.fromkeys(model.params, "seed")
        return model
    # Passed only when set: the loader's defaults (no overrides, no seeded memory) mean the same.
    options = {"spec_overrides": dict(spec_overrides or {}) or None, "init_memory": init_memory}
    model = load_checkpoint_model(checkpoint, spec, dtype=dtype, device=device, seed=seed, matmul=matmul,
                                  **{name: value for name, value in options.items() if value is not None})
    if getattr(model, "weight_sources", None) is None:  # a loader that does not say: every weight was read
        model.weight_sources = dict.fromkeys(model.params, "checkpoint")
    return model


def weight_source_summary(model: StackedModel) -> dict[str, list[str]]:
    """Where the weights came from: source ("checkpoint", "lora-merged", "seed", "tied") -> parameter names."""
    summary: dict[str, list[str]] = {}
    for name, source in sorted(model.weight_sources.items()):
        summary.setdefault(source, []).append(name)
    return summary


def random_token_ids(spec: ModelSpec, num_tokens: int, seed: int, batch_size: int = 1) -> torch.Tensor:
    """Seeded token ids ``[batch, num_tokens]`` (on the CPU; the model moves each segment it embeds)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, spec.vocab_size, (batch_size, num_tokens), generator=generator)


class OutputHash:
    """sha256 of the segment outputs' bytes, fed incrementally in segment order (a streaming callback).

    It also counts non-finite values (NaN, inf) on the CPU copy it hashes anyway: a run whose outputs
    hold any must not pass for a good one.
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.segments = 0
        self.nonfinite = 0

    def __call__(self, segment: int, output: torch.Tensor) -> None:
        if segment != self.segments:
            raise RuntimeError(f"segment {segment} arrived out of order (expected {self.segments})")
        host = output.detach().contiguous().cpu()
        self._sha.update(host.view(torch.uint8).numpy().tobytes())
        if host.is_floating_point():
            self.nonfinite += int(host.numel() - torch.isfinite(host).sum())
        self.segments += 1

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def free_memory_bytes(device: str) -> float | None:
    """Memory a run on ``device`` can still get: the GPU's free memory for CUDA (``torch.cuda.mem_get_info``),
    None for the CPU (the size guard then reads the host's MemAvailable itself)."""
    if device == "cuda" and torch.cuda.is_available():
        return float(torch.cuda.mem_get_info()[0])
    return None


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what they measure): the process's peak RSS on CPU, peak allocated tensor memory on CUDA."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    hwm_kib = _proc_status_kib("VmHWM")
    if hwm_kib is not None:
        return hwm_kib * 1024, "process_peak_rss"
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak_kib * (1 if sys.platform == "darwin" else 1024), "process_peak_rss"


def _proc_status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (Linux), else None.

    Preferred to ``ru_maxrss``: Linux carries the parent's resident size over fork and exec into the
    child's ``ru_maxrss``, so a run started from a big process would report the parent's peak, while
    ``VmHWM`` belongs to this process's own address space.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def verification_schedules(graph: CellGraph) -> dict[str, Schedule]:
    """Every registered scheduler with its default options, plus pipelined over every layer (P = L)."""
    schedules = {name: make_schedule(graph, name) for name in available_schedulers()}
    if "pipelined" in schedules and graph.num_layers > 1:
        schedules[f"pipelined/P{graph.num_layers}"] = make_schedule(graph, "pipelined", num_devices=graph.num_layers)
    if "diagonal" in schedules and graph.num_layers > 2:
        schedules["diagonal/w2"] = make_schedule(graph, "diagonal", max_width=2)
    return schedules


def default_tolerance(device: torch.device, dtype: torch.dtype) -> float:
    """The contract: bit-exact (0) on CPU; on CUDA a dtype-scaled bound (GPU libraries may batch differently)."""
    if device.type == "cpu":
        return 0.0
    return {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}.get(dtype, 1e-4)


__all__ = [
    "DEVICE_DTYPES",
    "DTYPES",
    "OutputHash",
    "default_tolerance",
    "load_model",
    "peak_memory",
    "random_token_ids",
    "resolve_device",
    "verification_schedules",
    "weight_source_summary",
]
