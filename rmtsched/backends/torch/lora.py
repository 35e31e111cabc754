"""peft LoRA adapters stored beside their base weights, merged on load: ``W = base + (lora_alpha / r) B @ A``.

A peft-wrapped linear saves ``<name>.base_layer.weight`` (the frozen base), ``<name>.lora_A.default.weight``
``[r, in]`` and ``<name>.lora_B.default.weight`` ``[out, r]``; ``adapter_config.json`` gives r and
lora_alpha. ``LoraMerged`` wraps a ``TensorView`` and shows each adapted linear as plain ``<name>.weight``,
so the loaders read merged and unadapted weights through one table. Adapter features we do not
implement (rsLoRA, DoRA, biases, per-module ranks) are refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rmtsched.backends.torch.tensor_files import TensorView, read_json
from rmtsched.errors import CheckpointError

ADAPTER_CONFIG = "adapter_config.json"
BASE, LORA_A, LORA_B = ".base_layer.weight", ".lora_A.default.weight", ".lora_B.default.weight"
# adapter_config.json key -> the value(s) we implement (absent keys take peft's default, which is one of them).
UNSUPPORTED_ADAPTER = {
    "peft_type": ("LORA",),
    "use_rslora": (False,),
    "use_dora": (False,),
    "fan_in_fan_out": (False,),
    "bias": ("none",),
    "rank_pattern": ({},),
    "alpha_pattern": ({},),
}


@dataclass(frozen=True)
class LoraAdapter:
    """What ``adapter_config.json`` says about merging: the rank r and lora_alpha."""

    r: int
    lora_alpha: float

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.r


def read_adapter_config(directory: Path) -> LoraAdapter | None:
    """The adapter of ``directory/adapter_config.json``, None without one; unsupported settings are refused."""
    path = directory / ADAPTER_CONFIG
    if not path.is_file():
        return None
    config = read_json(path)
    problems = [f"{key}={config[key]!r} is not supported (expected {allowed[0]!r})"
                for key, allowed in UNSUPPORTED_ADAPTER.items() if key in config and config[key] not in allowed]
    r, alpha = config.get("r"), config.get("lora_alpha")
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        problems.append(f"r={r!r} must be a positive integer")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        problems.append(f"lora_alpha={alpha!r} must be a number")
    if problems:
        raise CheckpointError(f"{str(path)!r}: " + "; ".join(problems))
    return LoraAdapter(r=r, lora_alpha=float(alpha))


class LoraMerged:
    """``view`` with every adapted linear's three tensors shown as one merged ``<name>.weight``.

    Same interface as ``TensorView`` (names, shape, get, source, display, problems).
    """

    def __init__(self, view: TensorView, adapter: LoraAdapter | None):
        self.directory = view.directory
        self._view = view
        self._adapter = adapter
        names = view.names()
        pieces = [name for name in names if name.endswith((BASE, LORA_A, LORA_B))]
        self._merged = {name.removesuffix(BASE) + ".weight": name.removesuffix(BASE)
                        for name in pieces if name.endswith(BASE)}
        self._names = [name for name in names if name not in pieces] + list(self._merged)
        self._orphans = [name for name in pieces if not name.endswith(BASE)
                         and name.removesuffix(LORA_A).removesuffix(LORA_B) + ".weight" not in self._merged]
        if pieces and adapter is None:
            raise CheckpointError(
                f"checkpoint {str(view.directory)!r} holds LoRA tensors ({view.display(pieces[0])}, ...) but no "
                f"{ADAPTER_CONFIG}: expected its r and lora_alpha to merge them"
            )
        if adapter is not None and not pieces:
            raise CheckpointError(
                f"checkpoint {str(view.directory)!r} has {ADAPTER_CONFIG} but no LoRA tensors "
                f"(*{BASE}, *{LORA_A}, *{LORA_B}): remove it if the adapter is already merged"
            )

    def names(self) -> list[str]:
        return self._names

    def shape(self, name: str) -> tuple[int, ...]:
        return self._view.shape(self._merged[name] + BASE if name in self._merged else name)

    def source(self, name: str) -> str:
        return "lora-merged" if name in self._merged else self._view.source(name)

    def display(self, name: str) -> str:
        return self._view.display(self._merged[name] + BASE if name in self._merged else name)

    def get(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """The merged weight, computed in fp64 and rounded once to ``dtype``."""
        if name not in self._merged:
            return self._view.get(name, dtype)
        assert self._adapter is not None
        stem = self._merged[name]
        base = self._view.get(stem + BASE, torch.float64)
        down, up = self._view.get(stem + LORA_A, torch.float64), self._view.get(stem + LORA_B, torch.float64)
        return torch.addmm(base, up, down, alpha=self._adapter.scaling).to(dtype)

    def problems(self) -> list[str]:
        """Alias conflicts, LoRA pieces without a base weight, and A/B shapes that do not fit the base."""
        problems = self._view.problems()
        problems += [f"{self._view.display(name)} has no matching *{BASE}" for name in self._orphans]
        if self._adapter is None:
            return problems
        r = self._adapter.r
        for stem in self._merged.values():
            if len(self._view.shape(stem + BASE)) != 2:
                continue  # the loader's shape check names the mis-shaped base weight
            out_dim, in_dim = self._view.shape(stem + BASE)
            for suffix, want in ((LORA_A, (r, in_dim)), (LORA_B, (out_dim, r))):
                if stem + suffix not in self._view.names():
                    problems.append(f"missing {self._view.display(stem + suffix)} (expected shape {list(want)})")
                elif self._view.shape(stem + suffix) != want:
                    problems.append(f"{self._view.display(stem + suffix)} has shape "
                                    f"{list(self._view.shape(stem + suffix))}, expected {list(want)} (r={r})")
        return problems
