"""What the simulator costs: a model described as kernels per cell plus the bytes it keeps resident.

A ``Workload`` wraps any ``cell_kernels(tokens) -> list[KernelWork]`` (an ARMT/RMT ``ModelSpec``, the
full-attention baseline, or a plug-in ``RecurrentModel``), so the engines never special-case a model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from rmtsched.errors import SpecError
from rmtsched.specs.armt_cost import armt_cell_kernels, full_attention_layer_kernels, loss_kernels
from rmtsched.specs.cost import KernelWork
from rmtsched.specs.model import ModelSpec

CellKernels = Callable[[int], Sequence[KernelWork]]


def no_bytes(tokens: int) -> float:
    """Hidden-state size of a model that does not declare one (plug-ins may leave it out)."""
    return 0.0


@dataclass(frozen=True)
class Workload:
    """An L-layer model as the simulator sees it; every layer has the same kernels.

    ``hidden_bytes(tokens)`` is the size of the hidden states one cell hands to the next layer (and
    sends over a link when that layer is on another device). ``state_bytes_per_layer`` is the recurrent
    state each layer keeps for the whole sequence (ARMT's A_l and z_l). ``first_device_bytes`` and
    ``last_device_bytes`` live on the devices holding layer 0 and layer L-1 (embeddings; norm and head).
    """

    name: str
    num_layers: int
    cell_kernels: CellKernels
    dtype_bytes: int = 2
    hidden_bytes: Callable[[int], float] = no_bytes
    state_bytes_per_layer: float = 0.0
    first_device_bytes: float = 0.0
    last_device_bytes: float = 0.0
    # A training segment's loss on its output tokens (LM head, cross-entropy), run by its last-layer cell;
    # None: the model has none the simulator knows (a plug-in's workload), so training costs no loss.
    loss_kernels: CellKernels | None = None
    # A tied LM head is the embedding table: a device holding both layer 0 and layer L-1 holds it once.
    tied_table_bytes: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.num_layers, int) or self.num_layers <= 0:
            raise SpecError(f"workload {self.name!r}: num_layers must be a positive integer, got {self.num_layers!r}")
        for name in ("state_bytes_per_layer", "first_device_bytes", "last_device_bytes", "tied_table_bytes"):
            if getattr(self, name) < 0:
                raise SpecError(f"workload {self.name!r}: {name} must be >= 0, got {getattr(self, name)!r}")


def _hidden_bytes(spec: ModelSpec, tokens: int) -> float:
    return float(spec.tokens_per_cell(tokens) * spec.d_model * spec.dtype_bytes)


def _plain_hidden_bytes(spec: ModelSpec, tokens: int) -> float:
    return float(tokens * spec.d_model * spec.dtype_bytes)


def embedding_bytes(spec: ModelSpec) -> float:
    return float(spec.vocab_size * spec.d_model * spec.dtype_bytes)


def head_bytes(spec: ModelSpec) -> float:
    """Final RMSNorm and LM head on the last layer's device (a tied head is a copy of the embedding table
    there, unless that device holds layer 0 too: ``Workload.tied_table_bytes``)."""
    return float((spec.vocab_size + 1) * spec.d_model * spec.dtype_bytes)


def batched_kernels(cell_kernels: CellKernels, batch_size: int, tokens: int) -> list[KernelWork]:
    """A cell run on ``batch_size`` sequences at once: work, activations and tiles scale with the batch,
    the layer's weights are read once (attention stays per sequence: B n^2, not (B n)^2)."""
    return [
        dataclasses.replace(
            kernel, flops=kernel.flops * batch_size, activation_bytes=kernel.activation_bytes * batch_size,
            tiles=kernel.tiles * batch_size,
        )
        for kernel in cell_kernels(tokens)
    ]


def _scaled_bytes(hidden_bytes: Callable[[int], float], batch_size: int, tokens: int) -> float:
    return batch_size * hidden_bytes(tokens)


def with_batch(workload: Workload, batch_size: int) -> Workload:
    """``workload`` on ``batch_size`` sequences per cell: per-sequence state and hidden states times B."""
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise SpecError(f"batch size must be a positive integer, got {batch_size!r}")
    if batch_size == 1:
        return workload
    return dataclasses.replace(
        workload,
        cell_kernels=partial(batched_kernels, workload.cell_kernels, batch_size),
        loss_kernels=None if workload.loss_kernels is None else partial(batched_kernels, workload.loss_kernels,
                                                                         batch_size),
        hidden_bytes=partial(_scaled_bytes, workload.hidden_bytes, batch_size),
        state_bytes_per_layer=workload.state_bytes_per_layer * batch_size,
    )


def workload_from_spec(spec: ModelSpec) -> Workload:
    """The ARMT/RMT model of ``spec``: ARMT keeps A_l (phi x d) and z_l (phi) per layer; RMT carries its
    M memory tokens from the last layer of one segment to the first layer of the next."""
    if spec.family == "armt":
        state = (spec.phi_dim * spec.d_model + spec.phi_dim) * spec.dtype_bytes
        carried = 0.0
    else:
        state = 0.0
        carried = spec.mem_tokens * spec.d_model * spec.dtype_bytes
    return Workload(
        name=spec.name,
        num_layers=spec.num_layers,
        cell_kernels=partial(armt_cell_kernels, spec),
        dtype_bytes=spec.dtype_bytes,
        hidden_bytes=partial(_hidden_bytes, spec),
        state_bytes_per_layer=float(state),
        first_device_bytes=embedding_bytes(spec) + carried,
        last_device_bytes=head_bytes(spec),
        loss_kernels=partial(loss_kernels, spec),
        tied_table_bytes=embedding_bytes(spec) if spec.tie_word_embeddings else 0.0,
    )


def full_attention_workload(spec: ModelSpec, num_tokens: int) -> Workload:
    """The baseline: ``spec``'s LLaMA without memory, one cell per layer on all N tokens.

    It keeps a KV cache of the N tokens per layer (2 N kv_dim elements), the state a full-attention
    model holds after reading a context, as ARMT holds A_l and z_l; attention itself is flash-style.
    """
    return Workload(
        name=f"{spec.name}/full-attention",
        num_layers=spec.num_layers,
        cell_kernels=partial(full_attention_layer_kernels, spec),
        dtype_bytes=spec.dtype_bytes,
        hidden_bytes=partial(_plain_hidden_bytes, spec),
        state_bytes_per_layer=float(2 * num_tokens * spec.kv_dim * spec.dtype_bytes),
        first_device_bytes=embedding_bytes(spec),
        last_device_bytes=head_bytes(spec),
        tied_table_bytes=embedding_bytes(spec) if spec.tie_word_embeddings else 0.0,
    )


def workload_from_model(
    model: object,
    *,
    name: str = "plugin",
    dtype_bytes: int = 2,
    hidden_bytes: Callable[[int], float] = no_bytes,
    state_bytes_per_layer: float = 0.0,
) -> Workload:
    """Cost a plug-in ``RecurrentModel`` by its own ``cell_kernels``; memory figures are optional."""
    kernels = getattr(model, "cell_kernels", None)
    num_layers = getattr(model, "num_layers", None)
    if not callable(kernels) or not isinstance(num_layers, int):
        raise SpecError(f"{model!r} is not a RecurrentModel: expected num_layers and cell_kernels(tokens)")
    return Workload(name, num_layers, kernels, dtype_bytes, hidden_bytes, state_bytes_per_layer)


__all__ = [
    "CellKernels",
    "Workload",
    "batched_kernels",
    "embedding_bytes",
    "full_attention_workload",
    "head_bytes",
    "no_bytes",
    "with_batch",
    "workload_from_model",
    "workload_from_spec",
]
