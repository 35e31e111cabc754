"""Refusing non-finite weights at load time: a NaN or infinity in a checkpoint tensor is bad input.

One NaN weight makes every output NaN, and a run over such a model would otherwise "succeed" with a
hash of garbage. Checked once per tensor as it is read (``TensorFiles.get``), so the error names it.
"""

from __future__ import annotations

import torch

from rmtsched.errors import CheckpointError


def require_finite(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """``tensor`` if every element is finite, else a ``CheckpointError`` naming ``name`` and the count."""
    if tensor.is_floating_point() or tensor.is_complex():
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = int(finite.numel() - finite.sum())
            raise CheckpointError(
                f"checkpoint tensor {name!r} holds {bad:,} non-finite value(s) (NaN or infinity) of "
                f"{tensor.numel():,}: expected finite weights"
            )
    return tensor


__all__ = ["require_finite"]
