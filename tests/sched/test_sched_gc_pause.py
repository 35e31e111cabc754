"""Bulk builds pause the cyclic collector and always leave it as they found it."""

from __future__ import annotations

import gc

import pytest

from rmtsched.sched._gc import builds_bulk, gc_paused


@pytest.mark.parametrize("enabled_before", [True, False])
def test_gc_paused_restores_the_previous_state_even_on_error(enabled_before: bool) -> None:
    was = gc.isenabled()
    try:
        gc.enable() if enabled_before else gc.disable()
        with gc_paused():
            assert not gc.isenabled()
            with gc_paused():
                assert not gc.isenabled()
            assert not gc.isenabled()  # the inner pause must not re-enable early
        assert gc.isenabled() is enabled_before
        with pytest.raises(RuntimeError), gc_paused():
            raise RuntimeError("boom")
        assert gc.isenabled() is enabled_before
    finally:
        gc.enable() if was else gc.disable()


def test_builds_bulk_wraps_without_changing_the_function() -> None:
    @builds_bulk
    def collector_state(x: int) -> tuple[int, bool]:
        """Doc."""
        return x, gc.isenabled()

    assert collector_state(3) == (3, False)
    assert collector_state.__name__ == "collector_state" and collector_state.__doc__ == "Doc."
    assert gc.isenabled()
