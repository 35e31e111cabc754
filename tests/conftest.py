"""Test-wide fixtures: each test sees the scheduler registries (forward and training) as before the test.

Tests (and README examples) register their own schedulers; without this, which schedulers
``--schedule all`` lists would depend on the order the tests ran in.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rmtsched.sched.registry import _REGISTRY as FORWARD
from rmtsched.sched.train_registry import _REGISTRY as TRAINING


@pytest.fixture(autouse=True)
def _restore_scheduler_registries() -> Iterator[None]:
    before = []
    for registry in (FORWARD, TRAINING):
        registry.names()  # the built-ins are registered before the snapshot
        before.append(dict(registry.functions))
    yield
    for registry, functions in zip((FORWARD, TRAINING), before, strict=True):
        registry.functions.clear()
        registry.functions.update(functions)
