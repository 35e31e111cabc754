"""Options of the pytest-benchmark tests under bench/ (never part of the normal suite: testpaths is tests/).

    pytest bench/ --benchmark-only --benchmark-json bench.json                         # quick, small sizes
    pytest bench/ --benchmark-only --bench-segments 128 --bench-big-segments 24 --bench-rounds 5   # the README's
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rmtsched bench")
    group.addoption("--bench-segments", type=int, default=16, help="armt-small segments (README figures: 128)")
    group.addoption("--bench-big-segments", type=int, default=4, help="d_model 512 segments (README figures: 24)")
    group.addoption("--bench-rounds", type=int, default=3, help="paired rounds per benchmark (medians)")


@pytest.fixture
def bench_options(request: pytest.FixtureRequest) -> dict[str, int]:
    options = {name: request.config.getoption(f"--bench-{name.replace('_', '-')}")
               for name in ("segments", "big_segments", "rounds")}
    for name, value in options.items():
        if value < 1:
            raise pytest.UsageError(f"--bench-{name.replace('_', '-')} must be a positive integer, got {value}")
    return options
