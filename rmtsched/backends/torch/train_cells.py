"""A training cell's per-segment ends: how a family's segment enters layer 0 and how its loss leaves the last.

The layers themselves are the model's own code (``ARMTModel.train_layers`` / ``RMTModel.train_layers``: the
inference path's ``llama_layers`` and associative read/write, out of place, with ``GradRowMatmul``), run on a
whole training step of cells at once. The ends run once per cell (one layer-0 or last-layer cell per step
of distinct layers) with plain differentiable ops: the embedding lookup, the memory tokens, the final norm.

Weights come in as arguments (``GlobalWeights``: embeddings, memory, norm, head), so the executor can hand
in leaves of its own and read their gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from rmtsched.backends.torch.armt import ARMTModel
from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.kernels import rms_norm
from rmtsched.backends.torch.rmt import RMTModel
from rmtsched.errors import RmtschedError

GlobalWeights = Mapping[str, torch.Tensor]  # embed, final_norm, memory, lm_head (when untied)


@dataclass(frozen=True)
class CellMaths:
    """How one family's cell reads its segment and hands out its output."""

    segment_input: Callable[[StackedModel, GlobalWeights, torch.Tensor, torch.Tensor | None], torch.Tensor]
    segment_output: Callable[[StackedModel, GlobalWeights, torch.Tensor], torch.Tensor]


def head_weight(model: StackedModel, weights: GlobalWeights) -> torch.Tensor:
    return weights["embed"] if model.spec.tie_word_embeddings else weights["lm_head"]


# -- ARMT -----------------------------------------------------------------------------------------------
def armt_segment_input(
    model: StackedModel, weights: GlobalWeights, inputs: torch.Tensor, previous: torch.Tensor | None
) -> torch.Tensor:
    tokens = weights["embed"][inputs]  # [B, T, d]
    if not model.spec.mem_tokens:
        return tokens
    return torch.cat((tokens, weights["memory"].expand(tokens.shape[0], -1, -1)), dim=1)  # [B, T + M, d]


def armt_segment_output(model: StackedModel, weights: GlobalWeights, hidden: torch.Tensor) -> torch.Tensor:
    kept = hidden[:, : hidden.shape[1] - model.spec.mem_tokens]
    return rms_norm(kept, weights["final_norm"], model.spec.rms_norm_eps)  # [B, T, d]


# -- RMT ------------------------------------------------------------------------------------------------
def rmt_segment_input(
    model: StackedModel, weights: GlobalWeights, inputs: torch.Tensor, previous: torch.Tensor | None
) -> torch.Tensor:
    """``[read memory, tokens, write memory]``; memory = the last layer's normed write slots of s-1."""
    tokens, m = weights["embed"][inputs], model.spec.mem_tokens
    if not m:
        return tokens
    if previous is None:
        memory = weights["memory"].expand(tokens.shape[0], -1, -1)
    else:
        memory = rms_norm(previous[:, previous.shape[1] - m :], weights["final_norm"], model.spec.rms_norm_eps)
    return torch.cat((memory, tokens, memory), dim=1)  # [B, M + T + M, d]


def rmt_segment_output(model: StackedModel, weights: GlobalWeights, hidden: torch.Tensor) -> torch.Tensor:
    m = model.spec.mem_tokens
    return rms_norm(hidden[:, m : hidden.shape[1] - m], weights["final_norm"], model.spec.rms_norm_eps)


CELL_MATHS: dict[type, CellMaths] = {
    ARMTModel: CellMaths(armt_segment_input, armt_segment_output),
    RMTModel: CellMaths(rmt_segment_input, rmt_segment_output),
}


def cell_maths(model: object) -> CellMaths:
    """The training cell ends of ``model``'s family; only the built-in ARMT and RMT have them so far."""
    maths = CELL_MATHS.get(type(model))
    if maths is None:
        raise RmtschedError(
            f"training needs a differentiable cell; {type(model).__name__} has none (expected one of "
            f"{sorted(kind.__name__ for kind in CELL_MATHS)})"
        )
    return maths


def initial_state(model: StackedModel, batch_size: int) -> torch.Tensor | None:
    """A layer's state before segment 0: ARMT's zero A | z, RMT's none."""
    if not isinstance(model, ARMTModel):
        return None
    spec = model.spec
    return torch.zeros(batch_size, spec.phi_dim, spec.d_model + 1, dtype=model.dtype, device=model.device)


__all__ = ["CELL_MATHS", "CellMaths", "cell_maths", "head_weight", "initial_state"]
