"""Timing in rounds: each bench set up once, visited ``rounds`` times in turn, its samples pooled."""

from __future__ import annotations

import pytest

from rmtsched.calibrate.device import resolve_target
from rmtsched.calibrate.microbench import CUDA_GRID, FULL_GRID, QUICK_GRID, Bench, default_grid
from rmtsched.calibrate.run import run_benches
from rmtsched.calibrate.timing import FULL, TimingPolicy
from rmtsched.specs.cost import KernelWork


def test_a_visit_takes_its_share_of_the_repeats_and_only_the_first_warms_up() -> None:
    policy = TimingPolicy(warmup=2, min_repeats=6, max_repeats=50, budget_s=0.3, rounds=3)
    first, later = policy.visit(0), policy.visit(2)
    assert (first.warmup, later.warmup) == (2, 0)
    assert (first.min_repeats, first.max_repeats, first.rounds) == (2, 17, 1)
    assert first.budget_s == pytest.approx(0.1)
    assert FULL.rounds > 1


def test_invalid_rounds_are_rejected() -> None:
    with pytest.raises(ValueError, match="rounds >= 1"):
        TimingPolicy(rounds=0)


def test_benches_are_set_up_once_and_take_turns_across_rounds() -> None:
    events: list[str] = []

    def bench(name: str) -> Bench:
        def setup():
            events.append(f"setup {name}")
            return lambda: events.append(name)

        return Bench(name, "kernel", (KernelWork(name, 1, 0, 4, matmul=False),), 1, setup)

    policy = TimingPolicy(warmup=0, min_repeats=2, max_repeats=2, budget_s=0.0, rounds=2)
    measurements = run_benches([bench("a"), bench("b")], resolve_target("cpu", "fp32", 1), policy, progress=False)
    assert events == ["setup a", "a", "setup b", "b", "a", "b"]
    assert [m.name for m in measurements] == ["a", "b"]
    assert all(m.measured_s > 0 for m in measurements)


def test_a_gpu_is_calibrated_on_llama_sized_shapes() -> None:
    """The CPU grid's kernels are shorter than a GPU launch, which leaves a GPU's rates unidentified."""
    assert default_grid("cpu") is FULL_GRID and default_grid("cuda") is CUDA_GRID
    assert default_grid("cuda", quick=True) is QUICK_GRID
    assert max(CUDA_GRID.d_models) >= 2048 and CUDA_GRID.segment_len >= 1024
    assert CUDA_GRID.stream_elements * 2 > 100e6  # bf16 streams far beyond a GPU's L2 (50-60 MB)
