"""Reading the safetensors files of a checkpoint directory: one file, or shards listed by an index.

``TensorFiles`` maps every tensor name to its file and reads shapes without loading data, so a loader
can check a whole checkpoint (and list every problem at once) before it copies a single tensor.
Shared by rmtsched's own checkpoints (``checkpoint.py``) and Hugging Face ones (``hf_llama.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from rmtsched.backends.torch.finite import require_finite
from rmtsched.errors import CheckpointError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or a ``CheckpointError`` naming the file and what is wrong."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} is missing")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint file {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint file {str(path)!r} must hold a JSON object, got {type(data).__name__}")
    return data


def shard_files(directory: Path) -> dict[str, Path]:
    """Tensor name -> file: from ``model.safetensors.index.json``'s weight_map, or the one ``*.safetensors``."""
    index = directory / INDEX_FILE
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{str(index)!r} has no 'weight_map' object (tensor name -> shard file)")
        return {name: directory / str(file) for name, file in weight_map.items()}
    files = sorted(directory.glob("*.safetensors"))
    if len(files) != 1:
        found = [f.name for f in files] or "none"
        raise CheckpointError(
            f"checkpoint {str(directory)!r}: expected {SINGLE_FILE} (or shards listed by {INDEX_FILE}), "
            f"found safetensors files: {found}"
        )
    with ExitStack() as stack:
        return dict.fromkeys(_open(files[0], stack).keys(), files[0])


def _open(path: Path, stack: ExitStack) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint shard {str(path)!r} is missing")
    try:
        return stack.enter_context(safe_open(str(path), framework="pt"))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint shard {str(path)!r} is not a readable safetensors file: {exc}") from exc


class TensorFiles:
    """The tensors of a checkpoint directory, opened lazily; use as a context manager."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._files = shard_files(directory)
        self._stack = ExitStack()
        self._handles: dict[Path, tuple[Any, set[str]]] = {}

    def __enter__(self) -> TensorFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def names(self) -> list[str]:
        return list(self._files)

    def _handle(self, name: str) -> Any:
        path = self._files[name]
        if path not in self._handles:
            handle = _open(path, self._stack)
            self._handles[path] = (handle, set(handle.keys()))
        handle, held = self._handles[path]
        if name not in held:
            raise CheckpointError(f"tensor {name!r} is listed for shard {str(path)!r} but that shard does not hold it")
        return handle

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handle(name).get_slice(name).get_shape())

    def get(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        return require_finite(self._handle(name).get_tensor(name).to(dtype), name)


def shape_problems(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], ignored: Iterable[str] = ()
) -> list[str]:
    """Every missing, unexpected and mis-shaped tensor, each with what was expected."""
    skip = set(ignored)
    problems = [f"missing {name} (expected shape {list(shape)})" for name, shape in expected.items()
                if name not in found]
    problems += [f"{name} has shape {list(found[name])}, expected {list(shape)}" for name, shape in expected.items()
                 if name in found and tuple(found[name]) != tuple(shape)]
    problems += [f"unexpected {name} (shape {list(shape)})" for name, shape in found.items()
                 if name not in expected and name not in skip]
    return problems


def raise_problems(directory: Path, problems: list[str]) -> None:
    """One ``CheckpointError`` listing all ``problems`` (one line, so the CLI can print it)."""
    if problems:
        raise CheckpointError(f"checkpoint {str(directory)!r} has {len(problems)} problem(s): " + "; ".join(problems))
