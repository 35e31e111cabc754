"""What a command writes besides its table: JSON records that say where they came from, and progress bars.

Every subcommand's ``--json`` goes through ``to_json``: strict JSON (a NaN or infinity is a failure that
names the field, never ``NaN``/``Infinity``, which JSON readers reject) with each record stamped by
``provenance()`` (rmtsched's and torch's versions, the host), so a number found in a file later can be
traced to what produced it. Progress bars go to stderr only when it is a terminal (``show_progress``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from typing import Any

from rmtsched.errors import RunFailure
from rmtsched.specs.provenance import provenance, stamped


def to_json(data: Mapping[str, Any] | list[Mapping[str, Any]], indent: int | None = None) -> str:
    """One record or a list of records as strict JSON, each stamped with ``provenance()``.

    Raises ``RunFailure`` naming the first field that holds NaN or an infinity: such a value means the
    computation went wrong, and printing it would hand the next program a file it cannot parse.
    """
    records = [stamped(item) for item in data] if isinstance(data, list) else stamped(data)
    try:
        return json.dumps(records, indent=indent, allow_nan=False)
    except ValueError:  # only now walk the records (slow on a big schedule) to name the field
        found = _non_finite_field(records, "")
        if found is None:
            raise
        raise RunFailure(f"output field {found[0]} is {found[1]!r}, which strict JSON cannot hold: "
                         "a non-finite result is a failure, not a number") from None


def _non_finite_field(value: Any, path: str) -> tuple[str, float] | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    if isinstance(value, Mapping):
        items = ((f"{path}.{key}" if path else str(key), item) for key, item in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    return next((found for key, item in items if (found := _non_finite_field(item, key)) is not None), None)


def show_progress(args: argparse.Namespace) -> bool:
    """Draw progress bars? Only on a terminal and without ``--no-progress`` (a redirected log gets no ``\\r``)."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


__all__ = ["provenance", "show_progress", "stamped", "to_json"]
