"""Reading the safetensors files of a checkpoint directory: one file, or shards listed by an index.

``TensorFiles`` maps every tensor name to its file and reads shapes without loading data, so a loader
can check a whole checkpoint (and list every problem at once) before it copies a single tensor.
``TensorView`` shows the tensors under canonical names (a layout's aliases folded into one), so the
Hugging Face and ARMT-reference loaders share one table of names. Shared by every checkpoint format.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
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


class TensorView:
    """The tensors of ``files`` under canonical names: ``rename(file key)`` gives each one's name.

    Two file keys with one canonical name are aliases of one shared tensor (a layout may store either);
    the first is read, and ``problems`` reports aliases whose values differ. ``display(name)`` is the file
    key behind a name, or ``expected_key(name)`` for one the files lack (what error messages should say).
    """

    def __init__(
        self,
        files: TensorFiles,
        rename: Callable[[str], str] = str,
        expected_key: Callable[[str], str] = str,
    ):
        self.directory = files.directory
        self._files = files
        self._expected_key = expected_key
        self._keys: dict[str, str] = {}
        self._aliases: list[tuple[str, str]] = []
        for key in files.names():
            name = rename(key)
            if name in self._keys:
                self._aliases.append((self._keys[name], key))
            else:
                self._keys[name] = key

    def names(self) -> list[str]:
        return list(self._keys)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._files.shape(self._keys[name])

    def get(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        return self._files.get(self._keys[name], dtype)

    def source(self, name: str) -> str:
        """Where the tensor comes from, for ``StackedModel.weight_sources``."""
        return "checkpoint"

    def display(self, name: str) -> str:
        return self._keys.get(name) or self._expected_key(name)

    def problems(self) -> list[str]:
        """Aliases that hold different values (a shared tensor must be one tensor)."""
        return [f"{kept} and {other} name one shared tensor but hold different values"
                for kept, other in self._aliases
                if not torch.equal(self._files.get(kept, torch.float64), self._files.get(other, torch.float64))]


def shape_problems(
    expected: Mapping[str, tuple[int, ...]],
    found: Mapping[str, tuple[int, ...]],
    ignored: Iterable[str] = (),
    display: Callable[[str], str] = str,
) -> list[str]:
    """Every missing, unexpected and mis-shaped tensor, each with what was expected (names via ``display``)."""
    skip = set(ignored)
    problems = [f"missing {display(name)} (expected shape {list(shape)})" for name, shape in expected.items()
                if name not in found]
    problems += [f"{display(name)} has shape {list(found[name])}, expected {list(shape)}"
                 for name, shape in expected.items() if name in found and tuple(found[name]) != tuple(shape)]
    problems += [f"unexpected {display(name)} (shape {list(shape)})" for name, shape in found.items()
                 if name not in expected and name not in skip]
    return problems


def raise_problems(directory: Path, problems: list[str]) -> None:
    """One ``CheckpointError`` listing all ``problems`` (one line, so the CLI can print it)."""
    if problems:
        raise CheckpointError(f"checkpoint {str(directory)!r} has {len(problems)} problem(s): " + "; ".join(problems))
