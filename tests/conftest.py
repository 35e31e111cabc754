"""Test-wide fixtures: each test sees the scheduler registry as it was before the test.

Tests (and README examples) register their own schedulers; without this, which schedulers
``--schedule all`` lists would depend on the order the tests ran in.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rmtsched.sched.registry import _SCHEDULERS, available_schedulers


@pytest.fixture(autouse=True)
def _restore_scheduler_registry() -> Iterator[None]:
    available_schedulers()  # the built-ins are registered before the snapshot
    before = dict(_SCHEDULERS)
    yield
    _SCHEDULERS.clear()
    _SCHEDULERS.update(before)
