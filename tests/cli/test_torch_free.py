"""The instant commands never import torch: ``--help``, ``--version``, ``schedule`` and ``simulate``.

Importing torch costs about 2 s here, more than all the work of a schedule or a 1M-cell simulation, so the
subcommands import it inside their handlers. Each case runs in a fresh interpreter (an in-process check
would see the torch that other tests imported) and reports, after ``main`` returned, whether torch (or
tqdm, which only the backend's progress bars need) was loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, sys
from rmtsched.cli.main import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "loaded": sorted(m for m in ("torch", "tqdm") if m in sys.modules)}, out)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["schedule", "--help"],
        ["schedule", "--layers", "4", "--segments", "8"],
        ["schedule", "--layers", "4", "--segments", "8", "--train", "--schedule", "checkpointed",
         "--memory-budget", "6"],
        ["simulate", "--train", "--model", "armt-tiny", "--seq-len", "1000", "--hardware", "h200", "--schedule", "all"],
        ["train-step", "--help"],
        ["schedule", "--layers", "4", "--segments", "8", "--schedule", "pipelined", "--devices", "2", "--json"],
        ["simulate", "--model", "armt-small", "--seq-len", "4096", "--hardware", "cpu-generic", "--schedule", "all"],
        ["simulate", "--model", "armt-tiny", "--seq-len", "1000", "--hardware", "cpu-generic", "--schedule",
         "diagonal", "--json"],
    ],
    ids=lambda argv: " ".join(argv[:3]),
)
def test_instant_commands_never_import_torch(tmp_path: Path, argv: list[str]) -> None:
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-c", PROBE, str(report), *argv], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(report.read_text())
    assert result == {"code": 0, "loaded": []}, f"rmtsched {' '.join(argv)} loaded {result['loaded']}"
