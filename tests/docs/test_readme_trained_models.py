"""README's "Run a trained ARMT" commands run as written: tiny checkpoints in the real layouts, then the CLI.

Each line of the bash block is executed in a fresh directory: the example script by path, ``echo ... >``
as a file write, and every ``rmtsched`` command in-process; each must exit 0.
"""

from __future__ import annotations

import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest
from cli_helpers import run_main

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

REPO = Path(__file__).resolve().parents[2]


def trained_model_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.DOTALL)
    block = next(block for block in blocks if "make_tiny_checkpoints.py" in block)
    return [line for line in block.splitlines() if line.strip()]


def test_readme_trained_model_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    commands = trained_model_commands()
    assert any(" generate " in command for command in commands) and any("--init-memory" in c for c in commands)
    for command in commands:
        words = shlex.split(command)
        if words[0] == "echo":
            Path(words[-1]).write_text(words[1] + "\n")
        elif words[0].endswith("python"):
            monkeypatch.setattr(sys, "argv", [str(REPO / words[1]), *words[2:]])
            runpy.run_path(str(REPO / words[1]), run_name="__main__")
        else:
            assert words[0].endswith("rmtsched"), command
            code, out, err = run_main(capsys, *words[1:])
            assert code == 0, f"{command}: exit {code}: {err}"
    assert (tmp_path / "out.safetensors").is_file()
    assert out.startswith("tokens: ") and "text: w" in out  # generate printed new ids and their words
