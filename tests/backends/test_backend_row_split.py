"""Splitting a wide CPU step into row parts on separate threads: the bounds, when it applies, and the runner.

That a split step keeps every schedule bit-exact is checked end to end by the exactness and thread-count
tests (their diagonal steps split at two threads); here, the pieces.
"""

from __future__ import annotations

import threading

import pytest
import torch
from backend_helpers import build_model

from rmtsched.backends.torch.row_split import part_bounds, run_parts, split_parts
from rmtsched.backends.torch.threads import intra_op_threads
from rmtsched.specs.model import load_model_spec


@pytest.mark.parametrize(("width", "parts", "sizes"), [(16, 2, [8, 8]), (7, 2, [4, 3]), (5, 5, [1] * 5), (3, 1, [3])])
def test_parts_are_contiguous_balanced_and_cover_every_row(width: int, parts: int, sizes: list[int]) -> None:
    bounds = part_bounds(width, parts)
    assert [s.stop - s.start for s in bounds] == sizes
    assert [i for s in bounds for i in range(width)[s]] == list(range(width))


@pytest.mark.parametrize(("width", "parts"), [(3, 0), (3, 4)])
def test_impossible_split_is_refused(width: int, parts: int) -> None:
    with pytest.raises(ValueError, match=f"cannot split {width} rows into {parts}"):
        part_bounds(width, parts)


def test_only_opted_in_cpu_models_with_two_threads_and_rows_split() -> None:
    model = build_model(load_model_spec("armt-tiny"), seed=0)
    with intra_op_threads(2):
        assert split_parts(model, 16) == (2, 1)
        assert split_parts(model, 1) == (1, 2)
        assert split_parts(object(), 16) == (1, 2)  # a plug-in that did not opt in
    with intra_op_threads(1):
        assert split_parts(model, 16) == (1, 1)
    with intra_op_threads(4):
        assert split_parts(model, 16) == (4, 1)
        assert split_parts(model, 2) == (2, 2)


def test_parts_run_concurrently_in_order_with_the_callers_modes() -> None:
    barrier = threading.Barrier(2, timeout=30)  # both calls must be running at once to pass it

    def call(value: int):
        def run() -> tuple[int, bool, int]:
            barrier.wait()
            return value, torch.is_inference_mode_enabled(), torch.get_num_threads()

        return run

    with torch.inference_mode():
        assert run_parts([call(1), call(2)], 1) == [(1, True, 1), (2, True, 1)]
    assert run_parts([call(3), call(4)], 1) == [(3, False, 1), (4, False, 1)]


def test_a_failing_part_raises_after_every_part_finished() -> None:
    done = threading.Event()

    def slow() -> None:
        done.wait(0.2)
        done.set()

    def fail() -> None:
        raise RuntimeError("part failed")

    with pytest.raises(RuntimeError, match="part failed"):
        run_parts([fail, slow], 1)
    assert done.is_set()
