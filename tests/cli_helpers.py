"""Run the ``rmtsched`` CLI in-process and capture what it prints: one copy for every CLI test module.

In-process (``main([...])`` under pytest's ``capsys``) is much faster than a subprocess. argparse's own
errors leave through ``SystemExit``; the handlers and ``main``'s error path return a code instead, so
both are folded into one exit code. Importable as ``cli_helpers`` because pyproject.toml puts ``tests/``
on the path.
"""

from __future__ import annotations

import pytest

from rmtsched.cli.main import main


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``rmtsched *argv``: (exit code, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
