"""The model spec of a loaded checkpoint: what the files fix, what the caller chooses, and who wins.

Every checkpoint format finds some ``ModelSpec`` fields in its files (sizes from config.json and tensor
shapes) and leaves others as run choices (segment length, maths variant, name). ``resolve_spec`` starts
from the caller's ``spec`` (checked against the fixed fields) or from what was found, then applies
``spec_overrides``; an override or a given spec that contradicts a fixed field is refused by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from rmtsched.errors import CheckpointError, RmtschedError
from rmtsched.specs.model import ModelSpec

# What ``init_memory`` may ask for: None (the checkpoint must hold every weight) or "seed" (draw the ARMT/RMT
# memory weights a plain LLaMA checkpoint lacks from ``seed``).
INIT_MEMORY = (None, "seed")


@dataclass(frozen=True)
class LoadRequest:
    """The caller's choices for one ``load_model`` call, passed whole to the format's loader."""

    spec: ModelSpec | None = None
    spec_overrides: Mapping[str, Any] = field(default_factory=dict)
    init_memory: str | None = None
    dtype: torch.dtype | None = None
    device: torch.device | str = "cpu"
    seed: int = 0
    matmul: str = "auto"

    def __post_init__(self) -> None:
        if self.init_memory not in INIT_MEMORY:
            raise CheckpointError(f"init_memory {self.init_memory!r} is not one of {list(INIT_MEMORY)}")
        names = {f.name for f in dataclasses.fields(ModelSpec)}
        unknown = sorted(set(self.spec_overrides) - names)
        if unknown:
            raise CheckpointError(f"spec_overrides names unknown model spec field(s) {unknown}: expected some of "
                                  f"{sorted(names)}")


def resolve_spec(
    found: Mapping[str, Any], fixed: Mapping[str, str], request: LoadRequest, where: str
) -> ModelSpec:
    """The spec to build: ``request.spec`` or ``found`` (all fields), then ``request.spec_overrides``.

    ``fixed`` maps each field the checkpoint defines to where it is defined (for the error message); a
    given spec or an override must agree with ``found`` on those fields.
    """
    def contradiction(name: str, value: Any, by: str) -> str:
        return f"{name}={found[name]!r} from {fixed[name]} but {value!r} in the {by}"

    wrong = []
    if request.spec is not None:
        wrong += [contradiction(name, getattr(request.spec, name), "given spec")
                  for name in fixed if getattr(request.spec, name) != found[name]]
    wrong += [contradiction(name, value, "spec_overrides")
              for name, value in request.spec_overrides.items() if name in fixed and value != found[name]]
    if wrong:
        raise CheckpointError(f"{where}: the checkpoint fixes " + "; ".join(wrong))
    try:
        base = request.spec if request.spec is not None else ModelSpec.from_dict(dict(found))
    except (RmtschedError, TypeError) as exc:
        raise CheckpointError(f"{where} does not describe a model the backend can build: {exc}") from exc
    try:
        return base.replace(**request.spec_overrides)
    except (RmtschedError, TypeError) as exc:
        raise CheckpointError(f"spec_overrides {dict(request.spec_overrides)} do not fit {where}: {exc}") from exc
