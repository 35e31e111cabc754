"""The README's Python examples run as written: a newcomer's first copy-paste must work."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_python_examples() -> None:
    assert python_blocks(), "README.md lost its Python examples"


def test_readme_python_examples_run() -> None:
    """(A scheduler an example registers is dropped afterwards by tests/conftest.py's registry fixture.)"""
    for block in python_blocks():
        namespace: dict[str, object] = {}
        exec(compile(block, str(README), "exec"), namespace)


def test_readme_gives_two_commands_that_install() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert first_block is not None
    commands = [line for line in first_block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    assert all("pip install" in command for command in commands)
    assert "pytest" in commands[1]
