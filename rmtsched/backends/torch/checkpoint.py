"""Checkpoints: rmtsched's own ARMT/RMT format, and ``load_model`` that reads it or a Hugging Face LLaMA one.

Own format, a directory of two files: ``model.safetensors`` (the flat parameter dict of ``params.py``,
in the model's dtype) and ``rmtsched.json`` (format name and version, the ModelSpec dict, the dtype).
Loading checks everything before building and lists every problem in one ``CheckpointError``.
``load_model(path, spec, ...)`` is what ``session.load_model`` (``rmtsched run --checkpoint``) calls.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import safetensors.torch
import torch

from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.hf_llama import CONFIG_FILE, load_hf_llama
from rmtsched.backends.torch.models import DTYPES, build_model, parse_dtype
from rmtsched.backends.torch.params import param_shapes
from rmtsched.backends.torch.tensor_files import SINGLE_FILE, TensorFiles, raise_problems, read_json, shape_problems
from rmtsched.errors import CheckpointError, RmtschedError
from rmtsched.specs.model import ModelSpec

SPEC_FILE = "rmtsched.json"
FORMAT_NAME = "rmtsched-checkpoint"
FORMAT_VERSION = 1

# Spec fields that fix the weights or the maths; the others (name, segment_len, dtype_bytes) are run
# choices the caller may change when loading.
WEIGHT_FIELDS = ("family", "num_layers", "d_model", "num_heads", "num_kv_heads", "mlp_dim", "vocab_size",
                 "mem_tokens", "mem_key_dim", "dpfp_nu", "rope_theta", "rms_norm_eps", "armt_variant",
                 "tie_word_embeddings")


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
    safetensors.torch.save_file(tensors, str(directory / SINGLE_FILE), metadata={"format": "pt"})
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "dtype": dtype_name, "spec": model.spec.to_dict()}
    (directory / SPEC_FILE).write_text(json.dumps(header, indent=2) + "\n")
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


def check_spec_agrees(saved: ModelSpec, given: ModelSpec, where: str) -> None:
    """Raise naming every weight-defining field where the caller's spec differs from the saved one."""
    wrong = [f"{field}={getattr(saved, field)!r} in the checkpoint but {getattr(given, field)!r} in the given spec"
             for field in WEIGHT_FIELDS if getattr(saved, field) != getattr(given, field)]
    if wrong:
        raise CheckpointError(f"{where} disagrees with model spec {given.name!r}: " + "; ".join(wrong))


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
    directory = Path(directory)
    saved, saved_dtype = read_header(directory)
    if spec is not None:
        check_spec_agrees(saved, spec, str(directory / SPEC_FILE))
    spec = saved if spec is None else spec
    dtype = saved_dtype if dtype is None else dtype
    if not (directory / SINGLE_FILE).is_file():
        raise CheckpointError(f"checkpoint file {str(directory / SINGLE_FILE)!r} is missing")
    with TensorFiles(directory) as files:
        found = {name: files.shape(name) for name in files.names()}
        raise_problems(directory, shape_problems(param_shapes(spec), found))
        params = {name: files.get(name, dtype).to(device) for name in found}
    return build_model(spec, params=params, matmul=matmul)


# What a checkpoint directory holds -> how to load it (the first marker file present wins).
Loader = Callable[..., StackedModel]
FORMATS: dict[str, Loader] = {}


def register_checkpoint_format(marker_file: str, loader: Loader) -> None:
    """Make ``load_model`` use ``loader(directory, spec, dtype=, device=, seed=, matmul=, family=)``
    for directories holding ``marker_file``."""
    FORMATS[marker_file] = loader


def _load_own(directory: Path, spec: ModelSpec | None, *, dtype: torch.dtype | None, device: torch.device | str,
              seed: int, matmul: str, family: str) -> StackedModel:
    return load_checkpoint(directory, spec, dtype=dtype, device=device, matmul=matmul)


register_checkpoint_format(SPEC_FILE, _load_own)
register_checkpoint_format(CONFIG_FILE, load_hf_llama)


def load_model(
    path: Path | str,
    spec: ModelSpec | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    matmul: str = "auto",
    family: str = "armt",
) -> StackedModel:
    """Load the checkpoint directory ``path``: rmtsched's own (``rmtsched.json``) or HF LLaMA (``config.json``).

    ``seed`` draws the weights a checkpoint lacks (ARMT memory weights of an HF LLaMA); ``family`` is
    used only when ``spec`` is None and the checkpoint does not say it.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint {str(directory)!r} is not a directory")
    for marker, loader in FORMATS.items():
        if (directory / marker).is_file():
            return loader(directory, spec, dtype=dtype, device=device, seed=seed, matmul=matmul, family=family)
    raise CheckpointError(
        f"checkpoint {str(directory)!r} holds none of {list(FORMATS)}: expected an rmtsched checkpoint "
        f"({SPEC_FILE} + {SINGLE_FILE}) or a Hugging Face LLaMA one ({CONFIG_FILE} + *.safetensors)"
    )
