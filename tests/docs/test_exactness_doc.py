"""docs/exactness.md stays true to the tree: every file it cites exists, and its CUDA tolerances are the code's."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from rmtsched.backends.torch.session import default_tolerance

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "exactness.md"


def test_every_cited_file_exists() -> None:
    cited = set(re.findall(r"`((?:tests|rmtsched|bench|docs)/[\w/.-]+\.(?:py|md))`", DOC.read_text()))
    assert len(cited) >= 8, "the doc lost its table of tests"
    missing = sorted(path for path in cited if not (ROOT / path).is_file())
    assert not missing, f"docs/exactness.md cites files that do not exist: {missing}"


def test_the_stated_cuda_tolerances_are_the_ones_verify_uses() -> None:
    stated = {dtype: bound for bound, dtype in re.findall(r"(\de-\d) in (fp32|fp16|bf16)", DOC.read_text())}
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    assert stated.keys() == dtypes.keys()
    for name, dtype in dtypes.items():
        assert float(stated[name]) == default_tolerance(torch.device("cuda"), dtype), name
    assert default_tolerance(torch.device("cpu"), torch.float32) == 0.0
