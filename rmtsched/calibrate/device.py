"""Which torch device and dtype a calibration or comparison runs on, checked up front.

Errors are ``SpecError``s naming the bad value, so the CLI prints one line: an unknown device, CUDA asked
for where this torch build has none, or a dtype the simulator cannot cost (its matmul peaks are keyed by
the dtype names of ``rmtsched.specs.hardware.DTYPE_BY_BYTES``).
"""

from __future__ import annotations

import os
import platform
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from rmtsched.backends.torch.threads import check_thread_count, intra_op_threads
from rmtsched.errors import SpecError
from rmtsched.specs.hardware import DTYPE_BY_BYTES

DEVICES = ("cpu", "cuda")
# The dtypes a calibrated spec can carry: those the simulator looks up by element size.
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Target:
    """A resolved device and dtype, and the intra-op thread count timings were taken with."""

    device: torch.device
    dtype_name: str
    dtype: torch.dtype
    threads: int

    @property
    def dtype_bytes(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()


def resolve_target(device: str, dtype: str | None = None, threads: int | None = None) -> Target:
    """Check ``device``/``dtype``; ``threads`` defaults to torch's current intra-op thread count."""
    if device not in DEVICES:
        raise SpecError(f"unknown device {device!r}: expected one of {list(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise SpecError(
            f"device 'cuda' requested but torch {torch.__version__} sees no CUDA device "
            "(torch.cuda.is_available() is False): use --device cpu"
        )
    dtype = ("bf16" if device == "cuda" else "fp32") if dtype is None else dtype
    if dtype not in DTYPES:
        raise SpecError(f"unknown dtype {dtype!r}: expected one of {sorted(DTYPES)}")
    if threads is not None:
        check_thread_count(threads)
    target = Target(torch.device(device), dtype, DTYPES[dtype], threads or torch.get_num_threads())
    if DTYPE_BY_BYTES.get(target.dtype_bytes) != dtype:
        raise SpecError(f"dtype {dtype!r} is not the one the simulator uses for {target.dtype_bytes}-byte models")
    return target


def using_threads(target: Target) -> AbstractContextManager[int]:
    """Run with ``target.threads`` intra-op threads, restoring the caller's count afterwards."""
    return intra_op_threads(target.threads)


def describe_host(target: Target) -> str:
    """One line naming the machine the measurements came from (for the spec's notes)."""
    if target.device.type == "cuda":
        return f"{torch.cuda.get_device_name(target.device)}, torch {torch.__version__}"
    return (
        f"{_cpu_model()} ({os.cpu_count()} logical CPUs), {target.threads} torch threads, "
        f"torch {torch.__version__}, {platform.system()}"
    )


def device_memory_bytes(target: Target) -> float:
    """Memory of the device: the GPU's total memory, or the host's physical memory for the CPU."""
    if target.device.type == "cuda":
        return float(torch.cuda.get_device_properties(target.device).total_memory)
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16e9


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


__all__ = ["DEVICES", "DTYPES", "Target", "describe_host", "device_memory_bytes", "resolve_target", "using_threads"]
