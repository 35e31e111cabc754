"""Named presets or JSON files: the one loader behind ``load_model_spec`` and ``load_hardware_spec``.

Both specs are looked up the same way (``--model NAME|FILE``, ``--hardware NAME|FILE``): a registered
preset by name first, else a JSON file of the spec's fields whose name defaults to the file's stem. One
copy keeps the lookup order and the error messages the same for both.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from rmtsched.errors import SpecError


class _Named(Protocol):
    @property
    def name(self) -> str: ...


SpecT = TypeVar("SpecT", bound=_Named)


class Presets(Generic[SpecT]):
    """Registered specs of one ``kind`` ("model", "hardware"), loadable by name or from a JSON file."""

    def __init__(self, kind: str, from_dict: Callable[[dict[str, Any]], SpecT]):
        self.kind = kind
        self.from_dict = from_dict
        self._specs: dict[str, SpecT] = {}

    def register(self, spec: SpecT) -> SpecT:
        """Make ``spec`` available by its name (replacing any earlier one of that name)."""
        self._specs[spec.name] = spec
        return spec

    def names(self) -> list[str]:
        return sorted(self._specs)

    def load(self, name_or_path: str | Path) -> SpecT:
        """A preset by name, or a spec from a JSON file of its fields (named after the file by default)."""
        if str(name_or_path) in self._specs:
            return self._specs[str(name_or_path)]
        path = Path(name_or_path)
        if not path.is_file():
            raise SpecError(
                f"unknown {self.kind} {str(name_or_path)!r}: expected a JSON file or one of {self.names()}"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise SpecError(
                f"{self.kind} spec file {str(path)!r} is not valid JSON (UTF-8 text expected): {exc}"
            ) from exc
        except OSError as exc:
            raise SpecError(f"{self.kind} spec file {str(path)!r} cannot be read: {exc}") from exc
        if not isinstance(data, dict):
            raise SpecError(
                f"{self.kind} spec file {str(path)!r} must hold a JSON object, got {type(data).__name__}"
            )
        data.setdefault("name", path.stem)
        return self.from_dict(data)


def _reject_constant(name: str) -> None:
    """Python's json reads ``NaN`` and ``Infinity``, which are not JSON: a spec holding them is refused."""
    raise ValueError(f"{name} is not a JSON number")


__all__ = ["Presets"]
