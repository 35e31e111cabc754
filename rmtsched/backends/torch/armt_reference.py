"""ARMT reference checkpoints: the state dict of the reference's ``AssociativeRecurrentWrapper``, in safetensors.

Layout (design notes, section 3), all under ``memory_cell.``: ``memory`` [M, d]; per layer i, under either
alias ``layers.{i}.`` or ``model.model.layers.{i}.``, the memory projections ``W_mq.weight`` [d_mem, d],
``W_mk.weight`` [d_mem, d], ``W_mv.weight`` [d, d], ``W_mb.weight`` [1, d], ``W_mb.bias`` [1] and the
Hugging Face decoder layer under ``layer.``; ``model.model.embed_tokens`` / ``model.model.norm`` /
``model.lm_head`` (absent when tied). A peft LoRA run inserts ``base_model.model.`` after ``model.`` and
splits adapted linears (merged on load by ``lora.py``). We rename every key to the canonical
``LlamaForCausalLM`` names of ``hf_llama.py`` (memory projections beside the layer's own weights,
``model.layers.{i}.W_mq.weight``), so one table reads both layouts. config.json (the base LLaMA's) gives
the sizes; M comes from ``memory``, d_mem from ``W_mq``'s rows; T is a run choice (default 1024).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.checkpoint_spec import LoadRequest, resolve_spec
from rmtsched.backends.torch.hf_llama import (
    CONFIG_FILE,
    GLOBAL_SOURCES,
    LAYER_SOURCES,
    Tensors,
    check_head,
    check_tensors,
    config_spec_fields,
    finish_model,
    head_choice,
    llama_shapes,
    read_params,
)
from rmtsched.backends.torch.lora import LoraMerged, read_adapter_config
from rmtsched.backends.torch.tensor_files import TensorFiles, TensorView
from rmtsched.errors import CheckpointError
from rmtsched.specs.model import ModelSpec

PREFIX = "memory_cell."
LORA_PREFIX = "memory_cell.model.base_model.model."
_LAYER = re.compile(r"(?:model\.model\.)?layers\.(\d+)\.(.+)")
MEMORY_GLOBAL_SOURCES = {"memory": ("memory",)}
MEMORY_LAYER_SOURCES = {
    "mem_wq": ("W_mq.weight",),
    "mem_wkvb": ("W_mk.weight", "W_mv.weight", "W_mb.weight"),
    "mem_b_bias": ("W_mb.bias",),
}
REFERENCE_NU = 3  # the reference hard-codes DPFP-3


def is_reference_checkpoint(directory: Path) -> bool:
    """A config.json beside tensors named ``memory_cell.*`` (the reference wrapper's state dict)."""
    if not (directory / CONFIG_FILE).is_file():
        return False
    try:
        with TensorFiles(directory) as files:
            return any(name.startswith(PREFIX) for name in files.names())
    except CheckpointError:
        return False  # unreadable tensors: the plain LLaMA loader reports them


def canonical_name(key: str) -> str:
    """A reference key -> its canonical name; keys outside the layout keep their own name (and are unexpected)."""
    if not key.startswith(PREFIX):
        return key
    rest = key.removeprefix(PREFIX)
    if rest.startswith("model.base_model.model."):
        rest = "model." + rest.removeprefix("model.base_model.model.")
    layer = _LAYER.fullmatch(rest)
    if layer:
        index, inner = layer.groups()
        if inner.startswith("layer."):
            return f"model.layers.{index}.{inner.removeprefix('layer.')}"
        return f"model.layers.{index}.{inner}" if inner.startswith("W_m") else key
    if rest == "memory":
        return rest
    if rest.startswith("model.model."):
        return "model." + rest.removeprefix("model.model.")
    return "lm_head.weight" if rest == "model.lm_head.weight" else key


def _expected_key(model_prefix: str) -> Callable[[str], str]:
    """Canonical name -> the reference key a missing tensor should have (layers under the short alias)."""
    def key(name: str) -> str:
        layer = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
        if layer:
            index, inner = layer.groups()
            return f"{PREFIX}layers.{index}.{inner if inner.startswith('W_m') else 'layer.' + inner}"
        if name == "memory":
            return PREFIX + name
        return model_prefix + name
    return key


def memory_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    d, m = spec.d_model, spec.mem_key_dim
    piece = {"W_mq.weight": (m, d), "W_mk.weight": (m, d), "W_mv.weight": (d, d), "W_mb.weight": (1, d),
             "W_mb.bias": (1,)}
    shapes = {"memory": (spec.mem_tokens, d)}
    for layer in range(spec.num_layers):
        shapes.update({f"model.layers.{layer}.{key}": shape for key, shape in piece.items()})
    return shapes


def _found_fields(tensors: Tensors, found: dict[str, Any], fixed: dict[str, str]) -> None:
    """Add what the tensors fix: the family, M (``memory``'s rows), d_mem (``W_mq``'s rows), nu."""
    found["family"], fixed["family"] = "armt", "the memory_cell.* layout"
    found["dpfp_nu"], fixed["dpfp_nu"] = REFERENCE_NU, "the reference's DPFP (nu = 3)"
    names = tensors.names()
    for field, name in (("mem_tokens", "memory"), ("mem_key_dim", "model.layers.0.W_mq.weight")):
        if name in names and len(tensors.shape(name)) == 2:
            found[field], fixed[field] = tensors.shape(name)[0], tensors.display(name)


def load_armt_reference(directory: Path, request: LoadRequest) -> StackedModel:
    """The ARMT of a reference checkpoint directory (config.json + safetensors [+ adapter_config.json])."""
    found, fixed = config_spec_fields(directory)
    dtype = torch.float32 if request.dtype is None else request.dtype
    found["dtype_bytes"] = dtype.itemsize
    with TensorFiles(directory) as files:
        model_prefix = LORA_PREFIX if any(key.startswith(LORA_PREFIX) for key in files.names()) else PREFIX + "model."
        view = TensorView(files, canonical_name, _expected_key(model_prefix))
        tensors = LoraMerged(view, read_adapter_config(directory))
        _found_fields(tensors, found, fixed)
        spec = resolve_spec(found, head_choice(fixed, found, tensors), request, str(directory / CONFIG_FILE))
        check_head(spec, tensors, str(directory))
        check_tensors(tensors, {**llama_shapes(spec), **memory_shapes(spec)}, spec)
        params, sources = read_params(tensors, spec, dtype, {**GLOBAL_SOURCES, **MEMORY_GLOBAL_SOURCES},
                                      {**LAYER_SOURCES, **MEMORY_LAYER_SOURCES})
    return finish_model(spec, params, sources, request, dtype)
