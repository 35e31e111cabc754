"""Checkpoints: rmtsched's own format, and ``load_model``, the ONE entry point for every checkpoint layout.

Own format, a directory of two files: ``model.safetensors`` (the flat parameter dict of ``params.py``,
in the model's dtype) and ``rmtsched.json`` (format name and version, the ModelSpec dict, the dtype).
``load_model`` recognises a directory by the registered ``FORMATS`` (first match wins): rmtsched's own,
the ARMT reference layout (``armt_reference.py``, with or without LoRA), a plain Hugging Face LLaMA
(``hf_llama.py``). Every loader checks everything before building and lists every problem in one
``CheckpointError``; the spec comes from the files, the caller's ``spec`` and ``spec_overrides``
(``checkpoint_spec.py``), and every model records ``weight_sources``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from rmtsched.backends.torch.armt_reference import is_reference_checkpoint, load_armt_reference
from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.checkpoint_spec import LoadRequest, resolve_spec
from rmtsched.backends.torch.hf_llama import CONFIG_FILE, load_hf_llama
from rmtsched.backends.torch.models import DTYPES, build_model, parse_dtype
from rmtsched.backends.torch.params import param_shapes
from rmtsched.backends.torch.tensor_files import SINGLE_FILE, TensorFiles, raise_problems, read_json, shape_problems
from rmtsched.errors import CheckpointError, RmtschedError
from rmtsched.fileio import atomic_write_bytes, atomic_write_text
from rmtsched.specs.model import ModelSpec

SPEC_FILE = "rmtsched.json"
FORMAT_NAME = "rmtsched-checkpoint"
FORMAT_VERSION = 1

# Spec fields that fix the weights; the others (name, segment_len, dtype_bytes, armt_variant) are run
# choices the caller may change when loading.
WEIGHT_FIELDS = ("family", "num_layers", "d_model", "num_heads", "num_kv_heads", "mlp_dim", "vocab_size",
                 "mem_tokens", "mem_key_dim", "dpfp_nu", "rope_theta", "rms_norm_eps", "tie_word_embeddings",
                 "rope_type", "rope_factor", "rope_low_freq_factor", "rope_high_freq_factor",
                 "rope_original_max_position")


def save_checkpoint(model: StackedModel, directory: Path | str) -> Path:
    """Write ``model`` (all its layers) as ``model.safetensors`` + ``rmtsched.json`` into ``directory``."""
    directory = Path(directory)
    if model.layers != range(model.spec.num_layers):
        raise CheckpointError(
            f"cannot save a model slice holding layers {model.layers}: expected all {model.spec.num_layers} layers"
        )
    dtype_name = next(name for name, dtype in DTYPES.items() if dtype == model.dtype)
    directory.mkdir(parents=True, exist_ok=True)
    # Clones: safetensors refuses tensors that share storage, and a slice view would save its whole base.
    tensors = {name: value.detach().to("cpu").clone().contiguous() for name, value in model.params.items()}
    atomic_write_bytes(directory / SINGLE_FILE, safetensors.torch.save(tensors, metadata={"format": "pt"}))
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "dtype": dtype_name, "spec": model.spec.to_dict()}
    atomic_write_text(directory / SPEC_FILE, json.dumps(header, indent=2) + "\n")
    return directory


def read_header(directory: Path) -> tuple[ModelSpec, torch.dtype]:
    """The saved spec and dtype, after checking the format name and version."""
    path = directory / SPEC_FILE
    header = read_json(path)
    if header.get("format") != FORMAT_NAME or header.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} is format {header.get('format')!r} version {header.get('version')!r}: "
            f"expected {FORMAT_NAME!r} version {FORMAT_VERSION}"
        )
    try:
        spec = ModelSpec.from_dict(dict(header.get("spec") or {}))
        dtype = parse_dtype(str(header.get("dtype", "fp32")))
    except (RmtschedError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{str(path)!r} holds an invalid model spec or dtype: {exc}") from exc
    return spec, dtype


def load_checkpoint(
    directory: Path | str,
    spec: ModelSpec | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    matmul: str = "auto",
) -> StackedModel:
    """The model saved in ``directory``; ``spec`` (if given) must agree on the weight-defining fields and
    supplies the run choices (segment_len, name). ``dtype`` defaults to the saved one."""
    return _load_own(Path(directory), LoadRequest(spec=spec, dtype=dtype, device=device, matmul=matmul))


def _load_own(directory: Path, request: LoadRequest) -> StackedModel:
    saved, saved_dtype = read_header(directory)
    where = str(directory / SPEC_FILE)
    spec = resolve_spec(saved.to_dict(), dict.fromkeys(WEIGHT_FIELDS, where), request, str(directory))
    dtype = saved_dtype if request.dtype is None else request.dtype
    if not (directory / SINGLE_FILE).is_file():
        raise CheckpointError(f"checkpoint file {str(directory / SINGLE_FILE)!r} is missing")
    with TensorFiles(directory) as files:
        found = {name: files.shape(name) for name in files.names()}
        raise_problems(directory, shape_problems(param_shapes(spec), found))
        params = {name: files.get(name, dtype).to(request.device) for name in found}
    sources = {**dict.fromkeys(params, "checkpoint"), **({"lm_head": "tied"} if spec.tie_word_embeddings else {})}
    return build_model(spec, params=params, matmul=request.matmul, weight_sources=sources)


@dataclass(frozen=True)
class CheckpointFormat:
    """A checkpoint layout: ``detect(directory)`` says whether a directory holds it, ``load`` reads it."""

    name: str
    detect: Callable[[Path], bool]
    load: Callable[[Path, LoadRequest], StackedModel]
    description: str


FORMATS: dict[str, CheckpointFormat] = {}


def register_checkpoint_format(checkpoint_format: CheckpointFormat) -> CheckpointFormat:
    """Make ``load_model`` try ``checkpoint_format`` (after those registered before it)."""
    FORMATS[checkpoint_format.name] = checkpoint_format
    return checkpoint_format


register_checkpoint_format(CheckpointFormat(
    "rmtsched", lambda directory: (directory / SPEC_FILE).is_file(), _load_own, f"{SPEC_FILE} + {SINGLE_FILE}"))
register_checkpoint_format(CheckpointFormat(
    "armt-reference", is_reference_checkpoint, load_armt_reference,
    f"{CONFIG_FILE} + memory_cell.* safetensors [+ adapter_config.json]"))
register_checkpoint_format(CheckpointFormat(
    "hf-llama", lambda directory: (directory / CONFIG_FILE).is_file(), load_hf_llama,
    f"{CONFIG_FILE} + *.safetensors"))


def load_model(
    path: Path | str,
    spec: ModelSpec | None = None,
    *,
    spec_overrides: Mapping[str, Any] | None = None,
    init_memory: str | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    matmul: str = "auto",
) -> StackedModel:
    """The model in checkpoint directory ``path``, whatever its registered layout.

    ``spec`` None: the spec comes from the files (config.json and tensor shapes, or rmtsched.json);
    ``spec_overrides`` (e.g. ``segment_len``, ``armt_variant``, ``name``) apply on top. A given spec or an
    override that contradicts what the checkpoint fixes is refused naming the field. ``init_memory="seed"``
    draws memory weights a plain LLaMA checkpoint lacks from ``seed`` (refused otherwise). ``dtype``
    defaults to the saved one (own format) or fp32. ``model.weight_sources`` says where each weight came from.
    """
    directory = Path(path)
    request = LoadRequest(spec=spec, spec_overrides=dict(spec_overrides or {}), init_memory=init_memory,
                          dtype=dtype, device=device, seed=seed, matmul=matmul)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint {str(directory)!r} is not a directory")
    for checkpoint_format in FORMATS.values():
        if checkpoint_format.detect(directory):
            return checkpoint_format.load(directory, request)
    expected = "; ".join(f"{f.name} ({f.description})" for f in FORMATS.values())
    raise CheckpointError(f"checkpoint {str(directory)!r} holds none of the known layouts: expected {expected}")
