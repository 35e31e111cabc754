"""The run configuration: which model, which weights, which input, on which device, as one frozen value.

``rmtsched run``, ``verify``, ``compare``, ``generate``, the torchrun worker and the Python API
(``rmtsched.run(config)``) all take a ``RunConfig``; ``rmtsched.cli.args.add_run_arguments`` is its one
argparse group. It is plain data and torch-free (the CLI builds it before torch is imported); every
value is checked here, so a bad one is one ``SpecError`` naming it, whoever built the config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmtsched.errors import SpecError
from rmtsched.specs.model import ARMT_VARIANTS

# The dtypes each device runs (bit-exact fp32/fp64 on the CPU; fp32/bf16/fp16 on CUDA).
DEVICE_DTYPES: dict[str, tuple[str, ...]] = {"cpu": ("fp32", "fp64"), "cuda": ("fp32", "bf16", "fp16")}
DTYPE_NAMES = ("fp32", "fp64", "bf16", "fp16")
# Row-GEMM modes of ``rmtsched.backends.torch.rowmm.RowMatmul`` (a test keeps the two lists equal).
GEMM_MODES = ("auto", "rows", "batched")
# How to fill weights a checkpoint lacks: "seed" draws ARMT memory weights for a plain LLaMA checkpoint.
INIT_MEMORY = ("seed",)
# Tokens per chunk of the full-attention baseline's prefill (why this size: backends/torch/full_attention.py).
FULL_ATTENTION_CHUNK_TOKENS = 2048
# Spec fields a run may change without changing the weights' meaning (passed to the loader as overrides).
SPEC_OVERRIDES = ("segment_len", "mem_tokens", "armt_variant")


@dataclass(frozen=True)
class RunConfig:
    """What to run: a model (``model``: preset name or spec JSON, and/or ``checkpoint``: a directory whose
    spec it holds), the input (``tokens`` file, ``text`` file for a checkpoint with a tokenizer, or seeded
    random ids of ``seq_len``), the device and dtype, the weight seed and the row-GEMM mode.

    ``seq_len`` None means the input file's whole length; with a file, a smaller ``seq_len`` truncates
    it and a larger one is an error. ``dtype`` None lets the command choose (fp32; compare: bf16 on CUDA).
    ``segment_len``, ``mem_tokens`` and ``armt_variant`` override the spec (see ``spec_overrides``).
    """

    model: str | None = None
    checkpoint: Path | None = None
    seq_len: int | None = None
    segment_len: int | None = None
    mem_tokens: int | None = None
    armt_variant: str | None = None
    init_memory: str | None = None
    device: str = "cpu"
    dtype: str | None = "fp32"
    seed: int = 0
    gemm: str = "auto"
    tokens: Path | None = None
    text: Path | None = None

    def __post_init__(self) -> None:
        for name in ("checkpoint", "tokens", "text"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if self.model is None and self.checkpoint is None:
            raise SpecError("no model given: expected a model (preset name or spec JSON file) or a checkpoint")
        self._check_inputs()
        self._check_numbers()
        self._check_choices()

    def _check_inputs(self) -> None:
        if self.tokens is not None and self.text is not None:
            raise SpecError(f"both tokens {str(self.tokens)!r} and text {str(self.text)!r} given: expected one input")
        if self.text is not None and self.checkpoint is None:
            raise SpecError(
                f"text {str(self.text)!r} needs a checkpoint directory holding tokenizer.json to encode it"
            )
        if self.init_memory is not None and self.checkpoint is None:
            raise SpecError(f"init_memory {self.init_memory!r} applies to a checkpoint, but none was given")

    def _check_numbers(self) -> None:
        for name, low in (("seq_len", 1), ("segment_len", 1), ("mem_tokens", 0), ("seed", 0)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                expected = "a positive integer" if low else "a non-negative integer"
                raise SpecError(f"{name} must be {expected}, got {value!r}")

    def _check_choices(self) -> None:
        if self.device not in DEVICE_DTYPES:
            raise SpecError(f"unknown device {self.device!r}: expected one of {sorted(DEVICE_DTYPES)}")
        if self.dtype is not None:
            if self.dtype not in DTYPE_NAMES:
                raise SpecError(f"unknown dtype {self.dtype!r}: expected one of {sorted(DTYPE_NAMES)}")
            if self.dtype not in DEVICE_DTYPES[self.device]:
                raise SpecError(f"dtype {self.dtype} is not supported on {self.device}: expected one of "
                                f"{DEVICE_DTYPES[self.device]}")
        choices = (("gemm", GEMM_MODES), ("armt_variant", ARMT_VARIANTS), ("init_memory", INIT_MEMORY))
        for name, allowed in choices:
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise SpecError(f"unknown {name} {value!r}: expected one of {list(allowed)}")

    def require_input(self) -> None:
        """A run needs an input: a tokens or text file, or ``seq_len`` random ids (``load`` alone does not)."""
        if self.seq_len is None and self.tokens is None and self.text is None:
            raise SpecError("no input: expected --seq-len (random token ids), or a --tokens or --text file")

    @property
    def dtype_name(self) -> str:
        """The dtype to run in: ``dtype``, or fp32 when the command left the choice open."""
        return self.dtype or "fp32"

    @property
    def spec_overrides(self) -> dict[str, Any]:
        """The spec fields this run changes (segment_len, mem_tokens, armt_variant), only those given."""
        return {name: getattr(self, name) for name in SPEC_OVERRIDES if getattr(self, name) is not None}

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings."""
        fields = dataclasses.asdict(self)
        return {key: str(value) if isinstance(value, Path) else value for key, value in fields.items()}


__all__ = ["DEVICE_DTYPES", "DTYPE_NAMES", "FULL_ATTENTION_CHUNK_TOKENS", "GEMM_MODES", "INIT_MEMORY", "SPEC_OVERRIDES",
           "RunConfig"]
