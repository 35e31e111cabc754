"""Loading a model for the Python API: ``load``, the ``Model`` object (forward, generate), inputs and outputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.executor import execute
from rmtsched.backends.torch.session import (
    free_memory_bytes,
    load_model,
    resolve_device,
    weight_source_summary,
)
from rmtsched.backends.torch.token_io import InputError, TokenInput, check_token_ids, load_token_input
from rmtsched.errors import SpecError
from rmtsched.sched import graph_for_tokens, make_schedule
from rmtsched.specs.guard import Estimate, check_fits
from rmtsched.specs.model import ModelSpec, load_model_spec
from rmtsched.specs.run import RunConfig

if TYPE_CHECKING:  # the distributed layer is imported only for a multi-process run
    pass


@dataclass(frozen=True)
class ForwardOutput:
    """A forward pass: ``logits`` ``[B, N, V]`` (LM head) and ``hidden`` ``[B, N, d]`` (final-normed states
    at the input positions, memory positions dropped)."""

    logits: torch.Tensor
    hidden: torch.Tensor


class Model:
    """A loaded ARMT/RMT: its spec, the backend model, where each weight came from, and its run config."""

    def __init__(self, backend: StackedModel, config: RunConfig):
        self.backend = backend
        self.config = config

    @property
    def spec(self) -> ModelSpec:
        return self.backend.spec

    @property
    def weight_sources(self) -> dict[str, str]:
        """Parameter name -> "checkpoint" | "lora-merged" | "seed" | "tied"."""
        return dict(self.backend.weight_sources)

    def token_ids(self, tokens: Any) -> torch.Tensor:
        """``tokens`` (a tensor, array or list of ids, shape [N] or [B, N]) as checked int64 ids ``[B, N]``."""
        ids = torch.as_tensor(tokens)
        if ids.dim() == 1:
            ids = ids.reshape(1, -1)
        if ids.dim() != 2 or ids.shape[1] == 0 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise InputError(f"tokens must be integer ids of shape [N] or [B, N], got {ids.dtype} {list(ids.shape)}")
        ids = ids.to(torch.int64)
        check_token_ids(ids, self.spec.vocab_size, "tokens")
        return ids

    def input_of(self, config: RunConfig) -> TokenInput:
        """The input ``config`` names (tokens or text file, else seeded random ids of ``seq_len``)."""
        return input_of(config, self.spec)

    def forward(self, tokens: Any, schedule: str = "diagonal", *, max_width: int | None = None) -> ForwardOutput:
        """Run ``tokens`` ([N] or [B, N] ids) under ``schedule``; bit-identical for every schedule on CPU."""
        ids = self.token_ids(tokens)
        plan = make_schedule(graph_for_tokens(self.spec, int(ids.shape[1])), schedule, max_width=max_width)
        result = execute(self.backend, ids, plan)
        return outputs_of(self.backend, result.outputs)

    def generate(self, tokens: Any, max_new_tokens: int, schedule: str = "diagonal",
                 eos_token_id: int | None = None) -> Any:
        """Greedy decoding after building the memory under ``schedule`` (see ``backends/torch/generate.py``).

        Returns a ``GenerationResult``: ``tokens`` [B, K], ``logits`` [B, K, V], ``prefill_s``, ``decode_s``.
        """
        from rmtsched.backends.torch.generate import generate

        return generate(self.backend, self.token_ids(tokens), max_new_tokens, schedule=schedule,
                        eos_token_id=eos_token_id)

    def __repr__(self) -> str:
        return f"Model({self.backend!r}, weights {_sources_line(weight_source_summary(self.backend))})"


def load(
    checkpoint_or_spec: str | Path | ModelSpec, *, model: str | None = None, **fields: Any
) -> Model:
    """A model from a checkpoint directory, a spec preset name or JSON file, or a ``ModelSpec`` (seeded).

    Keywords are ``RunConfig`` fields: ``model`` (a spec overriding the checkpoint's), ``segment_len``,
    ``mem_tokens``, ``armt_variant``, ``init_memory="seed"`` (ARMT memory for a plain LLaMA), ``device``,
    ``dtype``, ``seed``, ``gemm``.
    """
    if isinstance(checkpoint_or_spec, ModelSpec):
        config = RunConfig(model=checkpoint_or_spec.name, **fields)
        device, dtype = resolve_device(config.device, config.dtype_name)
        backend = load_model(checkpoint_or_spec, checkpoint=None, seed=config.seed, dtype=dtype, device=device,
                             matmul=config.gemm, spec_overrides=config.spec_overrides)
        return Model(backend, config)
    if Path(checkpoint_or_spec).is_dir():
        return load_config(RunConfig(model=model, checkpoint=Path(checkpoint_or_spec), **fields))
    if model is not None:
        raise SpecError(f"model {model!r} given twice: {checkpoint_or_spec!r} is not a checkpoint directory")
    return load_config(RunConfig(model=str(checkpoint_or_spec), **fields))


def load_config(config: RunConfig) -> Model:
    """The model ``config`` names: seeded from its spec, or read from its checkpoint."""
    device, dtype = resolve_device(config.device, config.dtype_name)
    spec = load_model_spec(config.model) if config.model is not None else None
    backend = load_model(spec, checkpoint=config.checkpoint, seed=config.seed, dtype=dtype, device=device,
                         matmul=config.gemm, spec_overrides=config.spec_overrides, init_memory=config.init_memory)
    return Model(backend, config)


def check_fits_on(estimate: Estimate, config: RunConfig, force: bool) -> Estimate:
    """The size guard (``specs.guard.check_fits``) against the memory ``config``'s device has free: the GPU's
    on CUDA, the host's on the CPU."""
    return check_fits(estimate, force=force, available_bytes=free_memory_bytes(config.device))


def seeded_spec(config: RunConfig) -> ModelSpec:
    """The spec of ``config``'s seeded model (no checkpoint): the preset or file, with the run's overrides."""
    return load_model_spec(config.model).replace(**config.spec_overrides)


def input_of(config: RunConfig, spec: ModelSpec) -> TokenInput:
    """The input ``config`` names (tokens or text file, else seeded random ids of ``seq_len``), checked for ``spec``."""
    return load_token_input(spec, tokens=config.tokens, text=config.text, checkpoint=config.checkpoint,
                            seq_len=config.seq_len, seed=config.seed)


def outputs_of(model: StackedModel, segment_outputs: Sequence[torch.Tensor]) -> ForwardOutput:
    """Logits and hidden states from the segment outputs (one LM-head call per segment, as in any schedule)."""
    hidden = torch.cat(list(segment_outputs), dim=1)
    logits = torch.cat([model.logits(output) for output in segment_outputs], dim=1)
    return ForwardOutput(logits, hidden)



def config_with(config: RunConfig | None, fields: dict[str, Any]) -> RunConfig:
    """``config`` with ``fields`` changed, or a config of ``fields`` alone."""
    if config is None:
        return RunConfig(**fields)
    if not isinstance(config, RunConfig):
        raise SpecError(f"expected a RunConfig, got {type(config).__name__}")
    return config.replace(**fields) if fields else config


def input_provenance(config: RunConfig, spec: ModelSpec, sources: dict[str, list[str]],
                token_input: TokenInput) -> dict[str, Any]:
    """Where the weights and the input came from (every record carries it)."""
    return {"checkpoint": None if config.checkpoint is None else str(config.checkpoint),
            "armt_variant": spec.armt_variant, "weight_sources": sources, "input": token_input.to_dict()}


def segment_count(model: StackedModel, seq_len: int) -> int:
    return -(-seq_len // model.segment_len)


def _sources_line(summary: dict[str, list[str]]) -> str:
    return ", ".join(f"{source}: {len(names)}" for source, names in summary.items())
