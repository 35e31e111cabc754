"""Peak memory of a CPU run is this process's own, not a parent's carried over fork and exec."""

from __future__ import annotations

import subprocess
import sys

import torch

from rmtsched.backends.torch.session import peak_memory

CHILD = (
    "import torch; from rmtsched.backends.torch.session import peak_memory; "
    "print(peak_memory(torch.device('cpu'))[0])"
)


def test_peak_memory_grows_with_what_this_process_touches() -> None:
    before, kind = peak_memory(torch.device("cpu"))
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    after, _ = peak_memory(torch.device("cpu"))
    assert kind == "process_peak_rss"
    assert after >= before and after >= block.numel() * 4


def test_a_child_started_from_a_big_parent_reports_its_own_peak() -> None:
    parent_block = bytearray(1536 * 2**20)  # 1.5 GiB resident in this process
    for offset in range(0, len(parent_block), 4096):
        parent_block[offset] = 1
    parent_peak, _ = peak_memory(torch.device("cpu"))
    child_peak = int(subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                                    check=True).stdout)
    assert parent_peak > 1536 * 2**20
    # ru_maxrss would report at least the parent's 1.5 GiB here; the child itself holds torch only.
    assert child_peak < parent_peak - 1024 * 2**20, (child_peak, parent_peak)
