"""docs/plugins.md stays true: its ``python`` code blocks (the worked example) run as one script."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_worked_example_runs_and_its_assertions_hold():
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 3, "the worked example (model, schedules, simulation) is missing from docs/plugins.md"
    namespace: dict = {"__name__": "plugins_doc_example"}
    exec(compile("\n".join(blocks), str(DOC), "exec"), namespace)
    model = namespace["model"]
    assert model.num_layers == 3 and namespace["diagonal"] < namespace["sequential"]
