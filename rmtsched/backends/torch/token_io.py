"""Real inputs and outputs of a run: token ids from a file or from text, and saved logits and hidden states.

Inputs are checked before any model work: ids must be integers in ``[0, vocab_size)`` and the requested
length must fit the input. Outputs go to one safetensors file, written atomically (``rmtsched.fileio``),
so a failed run never leaves a truncated file behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from rmtsched.backends.torch.session import random_token_ids
from rmtsched.errors import RmtschedError
from rmtsched.fileio import atomic_write_bytes, check_writable
from rmtsched.specs.model import ModelSpec

TOKENIZER_FILE = "tokenizer.json"


class InputError(RmtschedError, ValueError):
    """An input file is missing, malformed, or holds ids the model cannot embed."""


@dataclass(frozen=True)
class TokenInput:
    """Token ids ``[B, N]`` (int64, CPU) and where they came from, for the record."""

    ids: torch.Tensor
    source: str
    available_tokens: int

    @property
    def truncated(self) -> bool:
        return int(self.ids.shape[1]) < self.available_tokens

    def describe(self) -> str:
        batch, tokens = self.ids.shape
        text = f"{tokens} token ids x batch {batch} from {self.source}"
        if self.truncated:
            text += f" (truncated from {self.available_tokens} to --seq-len {tokens})"
        return text

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "batch": int(self.ids.shape[0]), "tokens": int(self.ids.shape[1]),
                "available_tokens": self.available_tokens, "truncated": self.truncated}


def read_token_file(path: Path) -> torch.Tensor:
    """Ids ``[B, N]`` from a ``.npy`` of integer shape [N] or [B, N], or text of whitespace-separated integers."""
    if not path.is_file():
        raise InputError(f"tokens file {str(path)!r} does not exist")
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"tokens file {str(path)!r} is not a readable .npy array: {exc}") from exc
        if array.dtype.kind not in "iu":
            raise InputError(f"tokens file {str(path)!r} holds {array.dtype} values: expected integer token ids")
        if array.ndim not in (1, 2):
            raise InputError(f"tokens file {str(path)!r} has shape {list(array.shape)}: expected [N] or [B, N]")
        ids = torch.from_numpy(array.astype(np.int64))
        return ids.reshape(1, -1) if array.ndim == 1 else ids
    try:
        words = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"tokens file {str(path)!r} cannot be read as UTF-8 text: {exc}") from exc
    bad = next((word for word in words if not word.lstrip("-").isdigit()), None)
    if bad is not None:
        raise InputError(f"tokens file {str(path)!r} holds {bad[:40]!r}: expected whitespace-separated integer ids")
    return torch.tensor([int(word) for word in words], dtype=torch.int64).reshape(1, -1)


def load_tokenizer(checkpoint: Path | None):  # -> tokenizers.Tokenizer (imported lazily)
    """The ``tokenizer.json`` of a checkpoint directory, loaded with the ``tokenizers`` package."""
    if checkpoint is None:
        raise InputError("--text needs a tokenizer, but no --checkpoint was given: give --tokens, or a directory "
                         f"holding {TOKENIZER_FILE}")
    tokenizer_file = checkpoint / TOKENIZER_FILE
    if not tokenizer_file.is_file():
        raise InputError(f"--text needs a tokenizer: {str(tokenizer_file)!r} does not exist")
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise InputError("--text needs the 'tokenizers' package (pip install 'rmtsched[text]')") from exc
    try:
        return Tokenizer.from_file(str(tokenizer_file))
    except Exception as exc:  # the tokenizers package raises its own untyped errors for a bad file
        raise InputError(f"{str(tokenizer_file)!r} is not a readable tokenizer: {exc}") from exc


def encode_text(path: Path, checkpoint: Path | None) -> torch.Tensor:
    """Ids ``[1, N]`` of the UTF-8 text in ``path``, encoded by ``checkpoint/tokenizer.json``."""
    tokenizer = load_tokenizer(checkpoint)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"text file {str(path)!r} cannot be read as UTF-8 text: {exc}") from exc
    return torch.tensor(tokenizer.encode(text).ids, dtype=torch.int64).reshape(1, -1)


def load_token_input(
    spec: ModelSpec, *, tokens: Path | None, text: Path | None, checkpoint: Path | None, seq_len: int | None,
    seed: int,
) -> TokenInput:
    """The run's input: ids from ``tokens`` or ``text`` (cut to ``seq_len`` if given), else seeded random ids."""
    if tokens is None and text is None:
        if seq_len is None:
            raise InputError("no input: expected --seq-len (random token ids), --tokens or --text")
        return TokenInput(random_token_ids(spec, seq_len, seed), f"random ids (seed {seed})", seq_len)
    if tokens is not None:
        ids, source = read_token_file(tokens), f"tokens file {str(tokens)!r}"
    else:
        ids, source = encode_text(text, checkpoint), f"text file {str(text)!r}"
    available = int(ids.shape[1])
    if available == 0:
        raise InputError(f"{source} holds no tokens: expected at least one")
    check_token_ids(ids, spec.vocab_size, source)
    if seq_len is not None:
        if seq_len > available:
            raise InputError(f"--seq-len {seq_len} is longer than the {available} tokens of {source}")
        ids = ids[:, :seq_len]
    return TokenInput(ids, source, available)


def check_token_ids(ids: torch.Tensor, vocab_size: int, source: str = "input") -> None:
    """Every id must index the embedding table: ``0 <= id < vocab_size``."""
    bad = (ids < 0) | (ids >= vocab_size)
    if bool(bad.any()):
        value = int(ids[bad][0])
        raise InputError(f"{source} holds token id {value}: expected ids in [0, {vocab_size}) (the model's vocab)")


def save_outputs(path: Path, logits: torch.Tensor, hidden: torch.Tensor) -> Path:
    """Write ``logits`` ``[B, N, V]`` and ``hidden`` ``[B, N, d]`` to a safetensors file, atomically."""
    check_writable(path, "outputs file")
    tensors = {"logits": logits.detach().cpu().contiguous(), "hidden": hidden.detach().cpu().contiguous()}
    return atomic_write_bytes(path, safetensors.torch.save(tensors, metadata={"format": "pt"}))


__all__ = ["TOKENIZER_FILE", "InputError", "TokenInput", "check_token_ids", "encode_text", "load_token_input",
           "read_token_file", "save_outputs"]
