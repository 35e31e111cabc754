"""The model spec: sizes of a LLaMA-style recurrent memory transformer (ARMT or RMT).

The same frozen dataclass is costed by ``rmtsched.sim`` and built by ``rmtsched.backends``, so a
simulated model and a real one can never disagree about shapes. Presets follow the design notes'
LLaMA sizes; ``load_model_spec`` takes a preset name or a JSON file with these fields.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmtsched.errors import SpecError
from rmtsched.specs.presets import Presets

FAMILY_RULES = {"armt": "layer_local", "rmt": "global_memory"}
# ARMT's two published maths variants (design notes section 3): "paper" (the ARMT paper, the reference's
# main branch and the trained checkpoints) and "normalized" (the reference's later experimental branch).
ARMT_VARIANTS = ("paper", "normalized")
# Largest size field (layers, widths, vocabulary, tokens). No real model comes near it; the cap keeps
# absurd values (10**400 in a spec file) out of the cost model's float arithmetic, where they overflow.
MAX_SIZE = 2**31 - 1
# Rotary position embeddings: "default" (theta^(-2i/hd)) or "llama3" (Llama 3.1/3.2's frequency scaling).
ROPE_TYPES = ("default", "llama3")


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3's rotary frequency scaling (HF ``rope_type: "llama3"``).

    With wavelength lambda = 2 pi / f of each default frequency f: lambda < original / high_freq_factor keeps
    f; lambda > original / low_freq_factor uses f / factor; in between, a smooth mix
    ``(1 - s) f / factor + s f`` with ``s = (original / lambda - low) / (high - low)``.
    """

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position: int


@dataclass(frozen=True)
class ModelSpec:
    """Shapes of an ARMT/RMT model.

    ``family`` picks the memory: ``armt`` gives every layer an associative memory (A_l, z_l) and M
    write-memory tokens appended to each segment (layer-local DAG); ``rmt`` carries M memory tokens
    from the last layer of segment s-1 into layer 0 of segment s, read at the front of the segment and
    written at its end (T + 2M tokens per cell, global-memory DAG). ``mem_key_dim`` is ARMT's d_mem:
    keys are projected to it and DPFP-nu lifts them to ``phi_dim = 2 * nu * mem_key_dim``.
    ``armt_variant`` picks ARMT's memory maths: ``paper`` (phi as DPFP gives it, eps 1e-5 in gamma's
    denominator; what published checkpoints expect) or ``normalized`` (phi L2-normalised, no eps).
    ``tie_word_embeddings`` makes the LM head the embedding table (no separate ``lm_head`` weight).
    ``rope_type`` ``llama3`` scales the rotary frequencies with the four ``rope_*`` factors (see
    ``RopeScaling``; the defaults are Llama 3.1's); with ``default`` those four are unused.
    """

    name: str
    family: str
    num_layers: int
    d_model: int
    num_heads: int
    num_kv_heads: int
    mlp_dim: int
    vocab_size: int
    segment_len: int
    mem_tokens: int
    mem_key_dim: int = 64
    dpfp_nu: int = 3
    dtype_bytes: int = 2
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    armt_variant: str = "paper"
    tie_word_embeddings: bool = False
    rope_type: str = "default"
    rope_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position: int = 8192

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise SpecError(f"model spec field name must be a string, got {self.name!r}")
        if not isinstance(self.family, str) or self.family not in FAMILY_RULES:
            raise SpecError(f"model {self.name!r}: family {self.family!r} is not one of {sorted(FAMILY_RULES)}")
        if not isinstance(self.armt_variant, str) or self.armt_variant not in ARMT_VARIANTS:
            raise SpecError(
                f"model {self.name!r}: armt_variant {self.armt_variant!r} is not one of {list(ARMT_VARIANTS)}"
            )
        if not isinstance(self.tie_word_embeddings, bool):
            raise SpecError(
                f"model {self.name!r}: tie_word_embeddings must be true or false, got {self.tie_word_embeddings!r}"
            )
        positive = ("num_layers", "d_model", "num_heads", "num_kv_heads", "mlp_dim", "vocab_size", "segment_len")
        for field_name in (*positive, "mem_key_dim", "dpfp_nu", "dtype_bytes", "rope_original_max_position"):
            value = getattr(self, field_name)
            if not _is_int(value) or not 0 < value <= MAX_SIZE:
                raise SpecError(f"model {self.name!r}: {field_name} must be a positive integer (at most "
                                f"{MAX_SIZE:,}), got {value!r}")
        if not _is_int(self.mem_tokens) or not 0 <= self.mem_tokens <= MAX_SIZE:
            raise SpecError(f"model {self.name!r}: mem_tokens must be a non-negative integer (at most "
                            f"{MAX_SIZE:,}), got {self.mem_tokens!r}")
        for field_name in ("rope_theta", "rms_norm_eps"):  # NaN, inf or <= 0 would make every output NaN
            value = getattr(self, field_name)
            if not _is_real(value) or not 0 < value < math.inf:
                raise SpecError(f"model {self.name!r}: {field_name} must be a positive, finite number, got {value!r}")
        if self.d_model % self.num_heads:
            raise SpecError(
                f"model {self.name!r}: d_model {self.d_model} is not divisible by num_heads {self.num_heads}"
            )
        if self.num_heads % self.num_kv_heads:
            raise SpecError(
                f"model {self.name!r}: num_heads {self.num_heads} is not a multiple of num_kv_heads "
                f"{self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise SpecError(f"model {self.name!r}: head_dim {self.head_dim} must be even for rotary embeddings")
        self._check_rope()

    def _check_rope(self) -> None:
        if self.rope_type not in ROPE_TYPES:
            raise SpecError(f"model {self.name!r}: rope_type {self.rope_type!r} is not one of {list(ROPE_TYPES)}")
        for field_name in ("rope_factor", "rope_low_freq_factor", "rope_high_freq_factor"):
            value = getattr(self, field_name)
            if not _is_real(value) or not 0 < value < math.inf:
                raise SpecError(f"model {self.name!r}: {field_name} must be a positive, finite number, got {value!r}")
        if not self.rope_high_freq_factor > self.rope_low_freq_factor:
            raise SpecError(
                f"model {self.name!r}: rope_high_freq_factor {self.rope_high_freq_factor} must exceed "
                f"rope_low_freq_factor {self.rope_low_freq_factor}"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def rope_scaling(self) -> RopeScaling | None:
        """The llama3 frequency scaling, or None for plain rotary embeddings."""
        if self.rope_type == "default":
            return None
        return RopeScaling(self.rope_factor, self.rope_low_freq_factor, self.rope_high_freq_factor,
                           self.rope_original_max_position)

    @property
    def phi_dim(self) -> int:
        """Size of the DPFP feature map phi(k): 2 * nu * d_mem."""
        return 2 * self.dpfp_nu * self.mem_key_dim

    @property
    def dependency_rule(self) -> str:
        return FAMILY_RULES[self.family]

    def tokens_per_cell(self, segment_tokens: int) -> int:
        """Tokens one layer attends over for a segment of ``segment_tokens`` input tokens."""
        extra = self.mem_tokens if self.family == "armt" else 2 * self.mem_tokens
        return segment_tokens + extra

    def replace(self, **changes: Any) -> ModelSpec:
        """A copy with some fields changed (e.g. ``segment_len`` or ``mem_tokens`` from the CLI)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise SpecError(f"unknown model spec field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise SpecError(f"unknown model spec field(s) {sorted(unknown)}; expected some of {sorted(names)}")
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing = required - set(data)
        if missing:
            raise SpecError(f"model spec is missing field(s) {sorted(missing)}")
        return cls(**data)


def _is_int(value: Any) -> bool:
    """An int that is not a bool: JSON's ``true`` must not pass as 1 layer."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_PRESETS: Presets[ModelSpec] = Presets("model", ModelSpec.from_dict)


def register_model_spec(spec: ModelSpec) -> ModelSpec:
    """Make ``spec`` available by its name to ``load_model_spec`` and the CLI."""
    return _PRESETS.register(spec)


def available_model_specs() -> list[str]:
    return _PRESETS.names()


def load_model_spec(name_or_path: str | Path) -> ModelSpec:
    """A preset by name, or a spec from a JSON file of ``ModelSpec`` fields."""
    return _PRESETS.load(name_or_path)


# Test and CPU-benchmark sizes.
_TINY = dict(num_layers=4, d_model=64, num_heads=4, num_kv_heads=2, mlp_dim=256, vocab_size=1024,
             segment_len=64, mem_tokens=8, mem_key_dim=16, dtype_bytes=4)
_SMALL = dict(num_layers=16, d_model=128, num_heads=4, num_kv_heads=4, mlp_dim=512, vocab_size=4096,
              segment_len=64, mem_tokens=16, mem_key_dim=32, dtype_bytes=4)
# LLaMA-family sizes from the design notes (section 4); T = 1024, M = 16, d_mem = 64 are our defaults. The
# Llama 3 sizes carry their published rotary scaling (Llama-3.2-1B/3B: llama3, factor 32; Llama-3.1-8B:
# factor 8; low 1, high 4, original 8192 positions), so a seeded backend run rotates as the real model does,
# and their head: Llama-3.2-1B/3B tie the LM head to the embeddings, Llama-3.1-8B does not.
_LLAMA3_ROPE = dict(rope_theta=500000.0, rope_type="llama3", rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
                    rope_original_max_position=8192)
_LLAMA = {
    "llama-160m": dict(num_layers=12, d_model=768, num_heads=12, num_kv_heads=12, mlp_dim=3072, vocab_size=32000),
    "llama-1b": dict(num_layers=16, d_model=2048, num_heads=32, num_kv_heads=8, mlp_dim=8192, vocab_size=128256,
                     rope_factor=32.0, tie_word_embeddings=True, **_LLAMA3_ROPE),
    "llama-3b": dict(num_layers=28, d_model=3072, num_heads=24, num_kv_heads=8, mlp_dim=8192, vocab_size=128256,
                     rope_factor=32.0, tie_word_embeddings=True, **_LLAMA3_ROPE),
    "llama-8b": dict(num_layers=32, d_model=4096, num_heads=32, num_kv_heads=8, mlp_dim=14336, vocab_size=128256,
                     rope_factor=8.0, **_LLAMA3_ROPE),
}

for _family in FAMILY_RULES:
    register_model_spec(ModelSpec(name=f"{_family}-tiny", family=_family, **_TINY))
    register_model_spec(ModelSpec(name=f"{_family}-small", family=_family, **_SMALL))
    for _suffix, _sizes in _LLAMA.items():
        register_model_spec(
            ModelSpec(name=f"{_family}-{_suffix}", family=_family, segment_len=1024, mem_tokens=16, **_sizes)
        )
