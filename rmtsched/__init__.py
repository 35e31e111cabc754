"""rmtsched: schedule, simulate and run layer-recurrent memory transformers.

The package has three layers with imports pointing one way: ``rmtsched.sched`` (cell DAGs, the schedule
IR, schedulers, the validator) knows nothing of ``rmtsched.sim`` (cost simulator) or
``rmtsched.backends`` (PyTorch execution); both of those consume ``sched``'s types.

The Python API (``rmtsched.load``, ``run``, ``verify``, ``generate``, ``RunConfig``; see ``rmtsched/api/``) is
imported on first use, so ``import rmtsched`` stays free of torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from rmtsched.specs.provenance import RMTSCHED_VERSION as __version__

# Public name -> the module that defines it (imported on first access).
_LAZY = {"load": "rmtsched.api", "run": "rmtsched.api", "verify": "rmtsched.api", "generate": "rmtsched.api",
         "Model": "rmtsched.api", "ForwardOutput": "rmtsched.api", "RunConfig": "rmtsched.specs.run"}

__all__ = ["ForwardOutput", "Model", "RunConfig", "__version__", "generate", "load", "run", "verify"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rmtsched' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
