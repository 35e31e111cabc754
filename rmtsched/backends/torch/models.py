"""Building a built-in model from a ``ModelSpec``: a registry from spec family to model class.

``build_model(spec, seed=..., dtype=..., device=...)`` draws seeded parameters (``params.py``) or
takes a parameter dict (e.g. from a checkpoint loader) and returns an ARMT or RMT model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from rmtsched.backends.torch.armt import ARMTModel
from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.params import init_params
from rmtsched.backends.torch.rmt import RMTModel
from rmtsched.errors import SpecError
from rmtsched.specs.model import ModelSpec

_FAMILIES: dict[str, type[StackedModel]] = {"armt": ARMTModel, "rmt": RMTModel}

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp64": torch.float64,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def register_model_family(family: str, model_class: type[StackedModel]) -> None:
    """Make ``build_model`` build ``model_class`` for specs of ``family``."""
    _FAMILIES[family] = model_class


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise SpecError(f"unknown dtype {name!r}: expected one of {sorted(DTYPES)}")
    return DTYPES[name]


def build_model(
    spec: ModelSpec,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    layers: range | None = None,
    params: Mapping[str, torch.Tensor] | None = None,
    matmul: str = "auto",
    weight_sources: Mapping[str, str] | None = None,
) -> StackedModel:
    """An ARMT/RMT model for ``spec``: seeded random weights unless ``params`` is given.

    ``layers`` builds only a contiguous slice (global indices), drawing exactly the full model's
    weights for those layers. ``matmul`` picks the row-GEMM mode (see ``rowmm.RowMatmul``).
    ``weight_sources`` (see ``StackedModel``) defaults to ``seed`` for drawn weights, ``given`` for ``params``.
    """
    if spec.family not in _FAMILIES:
        raise SpecError(f"no backend model for family {spec.family!r}: expected one of {sorted(_FAMILIES)}")
    if params is None:
        params = init_params(spec, seed=seed, layers=layers, dtype=dtype, device=device)
        weight_sources = seeded_sources(spec, params)
    return _FAMILIES[spec.family](spec, params, layers=layers, matmul=matmul, weight_sources=weight_sources)


def seeded_sources(spec: ModelSpec, names: Iterable[str]) -> dict[str, str]:
    """``seed`` for every name, and ``tied`` for the LM head of a spec with tied embeddings."""
    return {**dict.fromkeys(names, "seed"), **({"lm_head": "tied"} if spec.tie_word_embeddings else {})}
