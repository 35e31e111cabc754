"""Hugging Face LLaMA checkpoints (``config.json`` + safetensors) loaded into the built-in ARMT/RMT.

``config.json`` gives the LLaMA sizes, rotary scaling and tied embeddings; any LLaMA feature the backend
does not implement is refused by name. Tensors map by one table (``params.py``'s): q/k/v are concatenated
into ``wqkv`` and gate/up into ``w_gate_up`` (dim 0, no transposes). Names are canonical
``LlamaForCausalLM`` names (``model.layers.{i}.…``, ``lm_head.weight``); a bare ``LlamaModel`` save gets the
``model.`` prefix added. The ARMT memory weights are not in a LLaMA checkpoint: loading refuses unless
the caller asks for them to be drawn from the seed (``init_memory="seed"``), and says so in
``weight_sources``. ``armt_reference.py`` reuses the config and tensor tables for the ARMT layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.checkpoint_spec import LoadRequest, resolve_spec
from rmtsched.backends.torch.models import build_model
from rmtsched.backends.torch.params import init_params, param_shapes
from rmtsched.backends.torch.tensor_files import TensorFiles, TensorView, raise_problems, read_json, shape_problems
from rmtsched.errors import CheckpointError
from rmtsched.specs.model import ModelSpec

CONFIG_FILE = "config.json"
# Run choices a LLaMA checkpoint does not make (the caller's spec or spec_overrides may change them).
DEFAULT_RUN_CHOICES = {"family": "armt", "segment_len": 1024, "mem_tokens": 16, "mem_key_dim": 64}

# config.json key -> ModelSpec field, for the sizes LLaMA defines.
CONFIG_FIELDS = {
    "num_hidden_layers": "num_layers",
    "hidden_size": "d_model",
    "num_attention_heads": "num_heads",
    "num_key_value_heads": "num_kv_heads",
    "intermediate_size": "mlp_dim",
    "vocab_size": "vocab_size",
    "rms_norm_eps": "rms_norm_eps",
    "tie_word_embeddings": "tie_word_embeddings",
}
REQUIRED_CONFIG = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
# config.json key -> the values we implement; a key that is absent takes HF's default, which is one of them.
IMPLEMENTED = {
    "model_type": ("llama",),
    "hidden_act": ("silu",),
    "attention_bias": (False,),
    "mlp_bias": (False,),
    "sliding_window": (None,),
    "pretraining_tp": (1,),
    "partial_rotary_factor": (1.0,),
}
# llama3 rotary scaling key (rope_parameters / rope_scaling) -> ModelSpec field.
LLAMA3_FIELDS = {
    "factor": "rope_factor",
    "low_freq_factor": "rope_low_freq_factor",
    "high_freq_factor": "rope_high_freq_factor",
    "original_max_position_embeddings": "rope_original_max_position",
}

# Our parameter -> the canonical tensors concatenated along dim 0 to make it (per layer under model.layers.{i}.).
GLOBAL_SOURCES = {"embed": ("model.embed_tokens.weight",), "final_norm": ("model.norm.weight",),
                  "lm_head": ("lm_head.weight",)}
LAYER_SOURCES = {
    "attn_norm": ("input_layernorm.weight",),
    "wqkv": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "wo": ("self_attn.o_proj.weight",),
    "mlp_norm": ("post_attention_layernorm.weight",),
    "w_gate_up": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    "w_down": ("mlp.down_proj.weight",),
}
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # old saves carry the rotary buffer; we rebuild the tables


class Tensors(Protocol):
    """What the readers need of a checkpoint's tensors (``TensorView`` or ``lora.LoraMerged``)."""

    directory: Path

    def names(self) -> list[str]: ...
    def shape(self, name: str) -> tuple[int, ...]: ...
    def get(self, name: str, dtype: torch.dtype) -> torch.Tensor: ...
    def source(self, name: str) -> str: ...
    def display(self, name: str) -> str: ...
    def problems(self) -> list[str]: ...


# -- config.json -> ModelSpec fields ---------------------------------------------------------------------


def _rope_config(config: dict[str, Any]) -> dict[str, Any]:
    """The rotary settings: ``rope_parameters`` (transformers 5) or ``rope_scaling`` + ``rope_theta`` (4.x)."""
    for key in ("rope_parameters", "rope_scaling"):
        value = config.get(key)
        if isinstance(value, dict):
            return {"rope_theta": config.get("rope_theta", 10000.0), **value}
    return {"rope_theta": config.get("rope_theta", 10000.0)}


def _rope_fields(config: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    rope = _rope_config(config)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    fields: dict[str, Any] = {"rope_theta": rope["rope_theta"], "rope_type": rope_type}
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        problems.append(f"partial_rotary_factor={rope['partial_rotary_factor']!r} is not supported (expected 1.0)")
    if rope_type == "llama3":
        problems += [f"rope type llama3 needs {key}" for key in LLAMA3_FIELDS if key not in rope]
        fields.update({name: rope[key] for key, name in LLAMA3_FIELDS.items() if key in rope})
    elif rope_type != "default":
        problems.append(f"rope_type={rope_type!r} is not supported (expected 'default' or 'llama3')")
    return fields


def config_fields(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The ModelSpec fields ``config`` defines; one ``CheckpointError`` lists every missing or unsupported key."""
    problems = [f"missing {key}" for key in REQUIRED_CONFIG if key not in config]
    problems += [f"{key}={config[key]!r} is not supported (expected {allowed[0]!r})"
                 for key, allowed in IMPLEMENTED.items() if key in config and config[key] not in allowed]
    heads, head_dim = config.get("num_attention_heads"), config.get("head_dim")
    if head_dim is not None and heads and config.get("hidden_size") != head_dim * heads:
        problems.append(f"head_dim={head_dim} is not supported (expected hidden_size / num_attention_heads)")
    fields = _rope_fields(config, problems)
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))
    fields.update({name: config[key] for key, name in CONFIG_FIELDS.items() if key in config})
    fields["num_kv_heads"] = config.get("num_key_value_heads") or heads
    fields.setdefault("rms_norm_eps", 1e-6)
    fields.setdefault("tie_word_embeddings", False)
    return fields


def config_spec_fields(directory: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(fields found, where each fixed one comes from) for a LLaMA ``config.json`` in ``directory``."""
    where = str(directory / CONFIG_FILE)
    fields = config_fields(read_json(directory / CONFIG_FILE), where)
    keys = {name: key for key, name in CONFIG_FIELDS.items()}
    fixed = {name: f"{CONFIG_FILE} {keys.get(name, name)}" for name in fields}
    return {"name": directory.resolve().name or "hf-llama", **DEFAULT_RUN_CHOICES, **fields}, fixed


# -- tensors ------------------------------------------------------------------------------------------------


def llama_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Shape of every canonical LLaMA tensor of ``spec`` (``lm_head.weight`` only when not tied)."""
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
    shapes = {"model.embed_tokens.weight": (spec.vocab_size, d), "model.norm.weight": (d,)}
    if not spec.tie_word_embeddings:
        shapes["lm_head.weight"] = (spec.vocab_size, d)
    for layer in range(spec.num_layers):
        shapes.update({f"model.layers.{layer}.{key}": shape for key, shape in piece.items()})
    return shapes


def check_tensors(tensors: Tensors, expected: dict[str, tuple[int, ...]], spec: ModelSpec) -> None:
    """One ``CheckpointError`` listing every missing, unexpected, mis-shaped or conflicting tensor.

    A tied LM head saved anyway is accepted only when it equals the embedding table it stands for.
    """
    found = {name: tensors.shape(name) for name in tensors.names()}
    ignored = [name for name in found if name.endswith(IGNORED_SUFFIXES)]
    problems = tensors.problems()
    if spec.tie_word_embeddings and "lm_head.weight" in found and "model.embed_tokens.weight" in found:
        head, embed = (tensors.get(name, torch.float64) for name in ("lm_head.weight", "model.embed_tokens.weight"))
        if head.shape == embed.shape and torch.equal(head, embed):
            ignored.append("lm_head.weight")
        else:
            problems.append(f"{tensors.display('lm_head.weight')} differs from the embedding table but the "
                            f"embeddings are tied (tie_word_embeddings=true)")
    raise_problems(tensors.directory, problems + shape_problems(expected, found, ignored, tensors.display))


def _gather(tensors: Tensors, names: tuple[str, ...], dtype: torch.dtype) -> torch.Tensor:
    pieces = [tensors.get(name, dtype) for name in names]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)


def read_params(
    tensors: Tensors,
    spec: ModelSpec,
    dtype: torch.dtype,
    global_sources: dict[str, tuple[str, ...]],
    layer_sources: dict[str, tuple[str, ...]],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Our parameters (of the tables' names that ``spec`` has) and each one's source, from checked tensors."""
    shapes = param_shapes(spec)
    params, sources = {}, {}
    for name, names in global_sources.items():
        if name in shapes:
            params[name] = _gather(tensors, names, dtype)
            sources[name] = _source(tensors, names)
    for name, pieces in layer_sources.items():
        stacked = torch.empty(shapes[name], dtype=dtype)
        layer_names = [tuple(f"model.layers.{layer}.{piece}" for piece in pieces) for layer in range(spec.num_layers)]
        for layer, names in enumerate(layer_names):
            stacked[layer] = _gather(tensors, names, dtype).view(shapes[name][1:])
        params[name] = stacked
        sources[name] = _source(tensors, tuple(name for names in layer_names for name in names))
    return params, sources


def _source(tensors: Tensors, names: tuple[str, ...]) -> str:
    """``lora-merged`` if an adapter touched any piece of a parameter, else the pieces' common source."""
    found = {tensors.source(name) for name in names}
    return "lora-merged" if "lora-merged" in found else found.pop()


def seeded_params(spec: ModelSpec, names: list[str], seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``names`` exactly as ``init_params(spec, seed=seed)`` draws them, without drawing the big tables.

    Each tensor's draw depends only on (seed, name, layer) and its own shape, so a copy of ``spec`` with a
    1-token vocabulary, a 1-wide MLP and a tied head draws the same memory weights at a fraction of the cost.
    """
    drawn = init_params(spec.replace(vocab_size=1, mlp_dim=1, tie_word_embeddings=True), seed=seed, dtype=dtype)
    return {name: drawn[name] for name in names}


def finish_model(
    spec: ModelSpec,
    params: dict[str, torch.Tensor],
    sources: dict[str, str],
    request: LoadRequest,
    dtype: torch.dtype,
) -> StackedModel:
    """Move ``params`` to the device and build the model, recording ``tied`` for a tied LM head."""
    if spec.tie_word_embeddings:
        sources["lm_head"] = "tied"
    params = {name: value.to(request.device) for name, value in params.items()}
    return build_model(spec, params=params, matmul=request.matmul, weight_sources=sources)


# -- the loader -----------------------------------------------------------------------------------------


def _canonical(key: str) -> str:
    """``LlamaForCausalLM`` names: a bare ``LlamaModel`` save gets the ``model.`` prefix."""
    return key if key.startswith(("model.", "lm_head.")) else "model." + key


def head_choice(fixed: dict[str, str], found: dict[str, Any], tensors: Tensors) -> dict[str, str]:
    """``fixed`` without ``tie_word_embeddings`` when the files hold no LM head to be untied from.

    A save without ``lm_head.weight`` under an untied config does not define the head: the caller may
    choose to tie it to the embeddings (``check_head`` refuses the load otherwise).
    """
    if "lm_head.weight" in tensors.names() or found["tie_word_embeddings"]:
        return fixed
    return {name: where for name, where in fixed.items() if name != "tie_word_embeddings"}


def check_head(spec: ModelSpec, tensors: Tensors, where: str) -> None:
    if not spec.tie_word_embeddings and "lm_head.weight" not in tensors.names():
        raise CheckpointError(
            f"{where}: no lm_head.weight (a LlamaModel save, not LlamaForCausalLM) and tie_word_embeddings is "
            f"false: save the LlamaForCausalLM, or use the embeddings as the LM head with spec_overrides "
            f"tie_word_embeddings=True"
        )


def load_hf_llama(directory: Path, request: LoadRequest) -> StackedModel:
    """A plain Hugging Face LLaMA directory: the LLaMA weights from the files, the memory weights from the seed.

    Refused unless ``request.init_memory == "seed"``: a LLaMA checkpoint has no ARMT/RMT memory weights.
    """
    found, fixed = config_spec_fields(directory)
    dtype = torch.float32 if request.dtype is None else request.dtype
    found["dtype_bytes"] = dtype.itemsize
    with TensorFiles(directory) as files:
        tensors = TensorView(files, _canonical)
        spec = resolve_spec(found, head_choice(fixed, found, tensors), request, str(directory / CONFIG_FILE))
        check_head(spec, tensors, str(directory))
        check_tensors(tensors, llama_shapes(spec), spec)
        missing = [name for name in param_shapes(spec) if name not in GLOBAL_SOURCES and name not in LAYER_SOURCES]
        if request.init_memory != "seed":
            raise CheckpointError(
                f"checkpoint {str(directory)!r} is a plain Hugging Face LLaMA: it has no {spec.family.upper()} "
                f"memory weights ({', '.join(missing)}); pass init_memory='seed' (CLI: --init-memory seed) to draw "
                f"them from the seed, or load an ARMT checkpoint"
            )
        params, sources = read_params(tensors, spec, dtype, GLOBAL_SOURCES, LAYER_SOURCES)
    params.update(seeded_params(spec, missing, request.seed, dtype))
    sources.update(dict.fromkeys(missing, "seed"))
    return finish_model(spec, params, sources, request, dtype)
