"""What the built-in ARMT and RMT share: spec, stacked parameters, layer slicing, embeddings, output norm.

A ``StackedModel`` holds the weights of the global layers ``layers`` (all of them unless it is a slice
made by ``slice_layers``); ``forward_layers`` takes GLOBAL layer indices and maps them to rows of its
stacked tensors. The embedding tables and final norm travel with every slice (they are small next to
the layers and let any stage embed or finish a segment). ``weight_sources`` says where each weight
came from (``checkpoint``, ``lora-merged``, ``seed``, ``tied``), so a run can report it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from rmtsched.backends.protocol import LayerState
from rmtsched.backends.torch.grad_rowmm import GradRowMatmul
from rmtsched.backends.torch.kernels import rms_norm
from rmtsched.backends.torch.layers import RotaryCache
from rmtsched.backends.torch.params import check_params, layer_param_names
from rmtsched.backends.torch.rowmm import RowMatmul
from rmtsched.specs.armt_cost import armt_cell_kernels
from rmtsched.specs.cost import KernelWork
from rmtsched.specs.model import ModelSpec


class StackedModel:
    """Base of the built-in models; subclasses define the memory (``forward_layers``, tokens layout)."""

    uses_previous_output = False

    def __init__(
        self,
        spec: ModelSpec,
        params: Mapping[str, torch.Tensor],
        *,
        layers: range | None = None,
        matmul: str = "auto",
        weight_sources: Mapping[str, str] | None = None,
    ):
        self.spec = spec
        self.layers = range(spec.num_layers) if layers is None else layers
        if self.layers.step != 1 or not 0 <= self.layers.start < self.layers.stop <= spec.num_layers:
            raise ValueError(f"layers {self.layers} is not a non-empty contiguous range of 0..{spec.num_layers - 1}")
        check_params(spec, params, self.layers)
        self.params = dict(params)
        self.weight_sources = _weight_sources(spec, self.params, weight_sources)
        embed = self.params["embed"]
        self.device, self.dtype = embed.device, embed.dtype
        self.rope = RotaryCache(spec.head_dim, spec.rope_theta, self.dtype, self.device, spec.rope_scaling)
        self.matmul = RowMatmul(matmul)
        self.grad_matmul = GradRowMatmul(self.matmul)  # the same GEMMs for autograd (training)

    # -- protocol attributes -----------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return self.spec.num_layers

    @property
    def segment_len(self) -> int:
        return self.spec.segment_len

    @property
    def dependency_rule(self) -> str:
        return self.spec.dependency_rule

    def cell_kernels(self, tokens: int) -> list[KernelWork]:
        return armt_cell_kernels(self.spec, tokens)

    # -- slicing ----------------------------------------------------------------------------------
    def slice_layers(self, start: int, stop: int) -> StackedModel:
        """A model owning copies of layers ``start..stop-1`` only (global indices), with its own state."""
        if not (self.layers.start <= start < stop <= self.layers.stop):
            raise ValueError(f"cannot slice layers {start}..{stop - 1} out of a model holding {self.layers}")
        offset = self.layers.start
        stacked = set(layer_param_names(self.spec))
        params = {
            name: value[start - offset : stop - offset].clone() if name in stacked else value
            for name, value in self.params.items()
        }
        return type(self)(self.spec, params, layers=range(start, stop), matmul=self.matmul.mode,
                          weight_sources=self.weight_sources)

    def _rows(self, layers: range) -> slice:
        if layers.step != 1 or layers.start < self.layers.start or layers.stop > self.layers.stop:
            raise ValueError(f"layers {layers} are not a contiguous part of this model's {self.layers}")
        return slice(layers.start - self.layers.start, layers.stop - self.layers.start)

    # -- embeddings and output ----------------------------------------------------------------------
    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """Token ids ``[B, n]`` -> ``[B, n, d]``; embeddings ``[B, n, d]`` pass through (cast, moved)."""
        if inputs.dtype in (torch.int32, torch.int64):
            return self.params["embed"][inputs.to(self.device)]
        return inputs.to(device=self.device, dtype=self.dtype)

    def final_norm(self, hidden: torch.Tensor, weights: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        return rms_norm(hidden, (self.params if weights is None else weights)["final_norm"], self.spec.rms_norm_eps)

    def segment_output(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.final_norm(self.output_tokens(hidden))  # [B, T, d]

    def output_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """The segment's own tokens out of a cell's ``[B, n', d]`` (the memory tokens dropped)."""
        raise NotImplementedError

    # -- training (``protocol.TrainableModel``; the layers are each family's ``train_layers``) ------------
    @property
    def train_layer_params(self) -> tuple[str, ...]:
        return tuple(layer_param_names(self.spec))

    def train_logits(self, weights: Mapping[str, torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
        head = weights["embed"] if self.spec.tie_word_embeddings else weights["lm_head"]
        return self.grad_matmul.dense(self.final_norm(self.output_tokens(hidden), weights), head)  # [B, T, V]

    def train_state(self, batch_size: int) -> torch.Tensor | None:
        return None

    @property
    def lm_head_weight(self) -> torch.Tensor:
        """``[V, d]``: ``lm_head``, or the embedding table when the spec ties them."""
        return self.params["embed"] if self.spec.tie_word_embeddings else self.params["lm_head"]

    def logits(self, output: torch.Tensor) -> torch.Tensor:
        """Segment outputs ``[B, n, d]`` (final-normed, as ``segment_output`` gives) -> logits ``[B, n, V]``.

        Computed outside the step loop on whole segment outputs, one call per segment whatever the
        schedule, so logits are as schedule-independent as the outputs they come from.
        """
        return torch.nn.functional.linear(output, self.lm_head_weight)

    def init_state(self, batch_size: int) -> LayerState:
        return {}

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({self.spec.name!r}, layers={self.layers}, dtype={self.dtype}, device={self.device})"


# Where a weight came from: a checkpoint tensor, a checkpoint tensor with its LoRA adapter merged in, a draw
# from the seed, the embedding table (a tied LM head), or a parameter dict the caller built.
WEIGHT_SOURCES = ("checkpoint", "lora-merged", "seed", "tied", "given")


def _weight_sources(
    spec: ModelSpec, params: Mapping[str, torch.Tensor], sources: Mapping[str, str] | None
) -> dict[str, str]:
    """Every name in ``params`` (plus ``lm_head`` when tied) -> its source; ``given`` when none is said."""
    expected = set(params) | ({"lm_head"} if spec.tie_word_embeddings else set())
    if sources is None:
        sources = {**dict.fromkeys(params, "given"), **({"lm_head": "tied"} if spec.tie_word_embeddings else {})}
    if set(sources) != expected or not set(sources.values()) <= set(WEIGHT_SOURCES):
        raise ValueError(
            f"weight_sources {dict(sources)} must map exactly the parameters {sorted(expected)} to one of "
            f"{list(WEIGHT_SOURCES)}"
        )
    return dict(sources)
