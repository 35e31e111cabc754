"""Where a record came from: rmtsched's and torch's versions and the host, stamped on every JSON record.

Torch's version is read from the installed metadata, so stamping a record never imports torch (the
simulator's commands stay torch-free). The CLI's ``--json`` and the Python API's records share this.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
from collections.abc import Mapping
from typing import Any

RMTSCHED_VERSION = "0.1.0"


@functools.cache
def provenance() -> dict[str, Any]:
    """``rmtsched_version``, ``torch_version`` (from the installed metadata: torch is not imported) and
    ``host`` facts (name, OS, CPU architecture and count, Python)."""
    try:
        torch_version: str | None = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = None
    host = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    return {"rmtsched_version": RMTSCHED_VERSION, "torch_version": torch_version, "host": host}


def stamped(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with the provenance fields added (its own fields win where names clash)."""
    return {**provenance(), **record}
