"""Hugging Face LLaMA checkpoints (``config.json`` + safetensors) loaded into the built-in ARMT/RMT.

``config.json`` gives the LLaMA sizes; the caller's spec (or the defaults) gives what LLaMA lacks:
family, segment length T, memory tokens M, d_mem. Tensors map by ``params.py``'s table: q/k/v are
concatenated into ``wqkv`` and gate/up into ``w_gate_up`` (dim 0, no transposes); the memory weights,
absent from LLaMA, are drawn from the seed exactly as a seeded model draws them. ``lm_head`` and rotary
``inv_freq`` buffers are ignored on purpose (the backend returns hidden states; it rebuilds the tables).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.models import build_model
from rmtsched.backends.torch.params import init_params, param_shapes
from rmtsched.backends.torch.tensor_files import TensorFiles, raise_problems, read_json, shape_problems
from rmtsched.errors import CheckpointError, SpecError
from rmtsched.specs.model import ModelSpec

CONFIG_FILE = "config.json"

# config.json key -> ModelSpec field, for the sizes LLaMA defines.
CONFIG_FIELDS = {
    "num_hidden_layers": "num_layers",
    "hidden_size": "d_model",
    "num_attention_heads": "num_heads",
    "num_key_value_heads": "num_kv_heads",
    "intermediate_size": "mlp_dim",
    "vocab_size": "vocab_size",
    "rope_theta": "rope_theta",
    "rms_norm_eps": "rms_norm_eps",
}
REQUIRED_CONFIG = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")

# Our parameter -> the HF tensors (relative to the model prefix) concatenated along dim 0 to make it.
GLOBAL_SOURCES = {"embed": ("embed_tokens.weight",), "final_norm": ("norm.weight",)}
LAYER_SOURCES = {
    "attn_norm": ("input_layernorm.weight",),
    "wqkv": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "wo": ("self_attn.o_proj.weight",),
    "mlp_norm": ("post_attention_layernorm.weight",),
    "w_gate_up": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    "w_down": ("mlp.down_proj.weight",),
}
IGNORED_SUFFIXES = ("lm_head.weight", "rotary_emb.inv_freq")


# -- config.json -> ModelSpec ------------------------------------------------------------------------


def _rope_type(config: dict[str, Any]) -> str:
    """``default`` unless rope_parameters (transformers 5) or rope_scaling (4.x) asks for another kind."""
    for key in ("rope_parameters", "rope_scaling"):
        value = config.get(key)
        if isinstance(value, dict):
            return str(value.get("rope_type", value.get("type", "default")))
    return "default"


def config_sizes(config: dict[str, Any], where: str = CONFIG_FILE) -> dict[str, Any]:
    """The ModelSpec fields ``config`` defines; a ``CheckpointError`` lists every missing or unsupported key."""
    problems = [f"missing {key}" for key in REQUIRED_CONFIG if key not in config]
    unsupported = {
        "hidden_act": (config.get("hidden_act", "silu"), "silu"),
        "attention_bias": (config.get("attention_bias", False), False),
        "mlp_bias": (config.get("mlp_bias", False), False),
        "rope_type": (_rope_type(config), "default"),
    }
    problems += [f"{key}={found!r} is not supported (expected {want!r})"
                 for key, (found, want) in unsupported.items() if found != want]
    heads = config.get("num_attention_heads")
    head_dim = config.get("head_dim")
    if head_dim is not None and heads and config.get("hidden_size") != head_dim * heads:
        problems.append(f"head_dim={head_dim} is not supported (expected hidden_size / num_attention_heads)")
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))
    rope = config.get("rope_parameters") if isinstance(config.get("rope_parameters"), dict) else {}
    return {
        "num_layers": config["num_hidden_layers"],
        "d_model": config["hidden_size"],
        "num_heads": heads,
        "num_kv_heads": config.get("num_key_value_heads") or heads,
        "mlp_dim": config["intermediate_size"],
        "vocab_size": config["vocab_size"],
        "rope_theta": float(config.get("rope_theta", rope.get("rope_theta", 10000.0))),
        "rms_norm_eps": float(config.get("rms_norm_eps", 1e-6)),
    }


def hf_model_spec(
    config: dict[str, Any],
    *,
    family: str = "armt",
    name: str = "hf-llama",
    segment_len: int = 1024,
    mem_tokens: int = 16,
    mem_key_dim: int = 64,
) -> ModelSpec:
    """A ModelSpec with ``config``'s LLaMA sizes and the given memory settings (defaults: T 1024, M 16)."""
    try:
        return ModelSpec(name=name, family=family, segment_len=segment_len, mem_tokens=mem_tokens,
                         mem_key_dim=mem_key_dim, **config_sizes(config))
    except SpecError as exc:
        raise CheckpointError(f"{CONFIG_FILE} does not describe a model the backend can build: {exc}") from exc


def check_spec_agrees(config: dict[str, Any], spec: ModelSpec, where: str) -> None:
    """Raise naming every field where ``config`` and the caller's ``spec`` disagree."""
    sizes = config_sizes(config, where)
    keys = {field: key for key, field in CONFIG_FIELDS.items()}
    wrong = [f"{keys[field]}={value!r} in {CONFIG_FILE} but {field}={getattr(spec, field)!r} in the given spec"
             for field, value in sizes.items() if getattr(spec, field) != value]
    if wrong:
        raise CheckpointError(f"{where} disagrees with model spec {spec.name!r}: " + "; ".join(wrong))


# -- tensors ------------------------------------------------------------------------------------------


def hf_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Shape of every HF tensor we read (names relative to the model prefix)."""
    d, hd, mlp = spec.d_model, spec.head_dim, spec.mlp_dim
    piece = {
        "input_layernorm.weight": (d,),
        "self_attn.q_proj.weight": (spec.num_heads * hd, d),
        "self_attn.k_proj.weight": (spec.num_kv_heads * hd, d),
        "self_attn.v_proj.weight": (spec.num_kv_heads * hd, d),
        "self_attn.o_proj.weight": (d, spec.num_heads * hd),
        "post_attention_layernorm.weight": (d,),
        "mlp.gate_proj.weight": (mlp, d),
        "mlp.up_proj.weight": (mlp, d),
        "mlp.down_proj.weight": (d, mlp),
    }
    shapes = {"embed_tokens.weight": (spec.vocab_size, d), "norm.weight": (d,)}
    for layer in range(spec.num_layers):
        shapes.update({f"layers.{layer}.{key}": shape for key, shape in piece.items()})
    return shapes


def _prefix(names: list[str]) -> str:
    """``model.`` for a ``LlamaForCausalLM`` save, empty for a bare ``LlamaModel``."""
    return "model." if any(name.startswith("model.") for name in names) else ""


def _gather(files: TensorFiles, prefix: str, sources: tuple[str, ...], dtype: torch.dtype) -> torch.Tensor:
    pieces = [files.get(prefix + source, dtype) for source in sources]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)


def read_llama_params(files: TensorFiles, spec: ModelSpec, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Our LLaMA parameters from ``files``, after checking every tensor name and shape (all listed at once)."""
    found = {name: files.shape(name) for name in files.names()}
    prefix = _prefix(list(found))
    expected = {prefix + name: shape for name, shape in hf_shapes(spec).items()}
    ignored = [name for name in found if name.endswith(IGNORED_SUFFIXES)]
    raise_problems(files.directory, shape_problems(expected, found, ignored))
    shapes = param_shapes(spec)
    params = {name: _gather(files, prefix, sources, dtype) for name, sources in GLOBAL_SOURCES.items()}
    for name, sources in LAYER_SOURCES.items():
        stacked = torch.empty(shapes[name], dtype=dtype)
        for layer in range(spec.num_layers):
            stacked[layer] = _gather(files, f"{prefix}layers.{layer}.", sources, dtype)
        params[name] = stacked
    return params


def seeded_params(spec: ModelSpec, names: list[str], seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``names`` exactly as ``init_params(spec, seed=seed)`` draws them, without drawing the big tables.

    Each tensor's draw depends only on (seed, name, layer) and its own shape, so a copy of ``spec`` with a
    1-token vocabulary and 1-wide MLP draws the same memory weights at a fraction of the cost.
    """
    small = spec.replace(mlp_dim=1) if "lm_head" in names else spec.replace(vocab_size=1, mlp_dim=1)
    drawn = init_params(small, seed=seed, dtype=dtype)
    return {name: drawn[name] for name in names}


def load_hf_llama(
    directory: Path,
    spec: ModelSpec | None = None,
    *,
    family: str = "armt",
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    matmul: str = "auto",
) -> StackedModel:
    """The model of ``spec`` (or of ``config.json`` with default memory settings) with the HF weights."""
    where = str(directory / CONFIG_FILE)
    config = read_json(directory / CONFIG_FILE)
    if spec is None:
        spec = hf_model_spec(config, family=family, name=directory.name or "hf-llama")
    else:
        check_spec_agrees(config, spec, where)
    dtype = torch.float32 if dtype is None else dtype
    with TensorFiles(directory) as files:
        params = read_llama_params(files, spec, dtype)
    params.update(seeded_params(spec, [name for name in param_shapes(spec) if name not in params], seed, dtype))
    params = {name: value.to(device) for name, value in params.items()}
    return build_model(spec, params=params, matmul=matmul)
