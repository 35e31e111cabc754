"""Writing output files safely: checked before long work, written atomically.

A user's trace, plot, calibration or saved outputs either appears whole or not at all: every writer
goes through ``atomic_writer`` (a temporary file in the same directory, then ``os.replace``), so a
crash or a full disk never leaves a truncated file in place of a good one. ``check_writable`` lets a
command refuse a bad path before minutes of work rather than after.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from rmtsched.errors import RmtschedError


class OutputPathError(RmtschedError):
    """An output path cannot be written: its directory is missing or not writable, or it is a directory."""


def check_writable(path: Path | str, what: str = "output file") -> Path:
    """``path`` as a Path, after checking a file can be created or replaced there (nothing is written)."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{what} {str(path)!r} is a directory: expected a file path")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"{what} {str(path)!r}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {str(path)!r}: directory {str(parent)!r} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{what} {str(path)!r} exists and is not writable")
    return path


@contextlib.contextmanager
def atomic_writer(path: Path | str, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path``, on error it is removed."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_writer mode must be 'w' or 'wb', got {mode!r}")
    path = check_writable(path)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(handle, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_writer(path) as file:
        file.write(text)
    return Path(path)


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_writer(path, "wb") as file:
        file.write(data)
    return Path(path)
