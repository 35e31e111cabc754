"""What every in-process ``rmtsched run`` measures, whatever ran: the timed runs' median, tokens/s, peak
memory and the output hash (equal in every repeat, or the run failed), and the outputs saved on request.

The schedule runs (``api/running.py``) and the full-attention baseline (``api/baseline.py``) differ only in
what they time; each passes a ``timed(outputs)`` that runs its timed repeats, run ``index`` delivering its
outputs, in order, to ``outputs(index)``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rmtsched.api.model import outputs_of
from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.session import OutputHash, peak_memory
from rmtsched.backends.torch.threads import intra_op_threads
from rmtsched.backends.torch.timing import Timing
from rmtsched.backends.torch.token_io import save_outputs
from rmtsched.errors import RunFailure

OutputCallback = Callable[[int, torch.Tensor], None]  # (segment or chunk index, final-normed hidden states)
Timed = Callable[[Callable[[int], OutputCallback]], Timing]  # runs the timed repeats; returns their timing


def measure(backend: StackedModel, ids: torch.Tensor, timed: Timed, *, outputs_per_run: int, threads: int | None,
            repeat: int, progress: bool, save_to: Path | None) -> dict[str, Any]:
    """Run ``timed`` with ``threads`` intra-op threads, hashing every run's outputs (and keeping the first
    run's to save); the record fields every in-process run shares."""
    digests = [OutputHash() for _ in range(repeat)]
    kept: list[torch.Tensor] = []
    bar = tqdm(total=repeat * outputs_per_run, desc="run", unit="out", file=sys.stderr, delay=2.0, leave=False,
               disable=not progress)

    def on_output(index: int, position: int, output: torch.Tensor) -> None:
        digests[index](position, output)
        if index == 0 and save_to is not None:
            kept.append(output)
        bar.update(1)

    with bar, intra_op_threads(threads) as used_threads:
        timing = timed(lambda index: partial(on_output, index))
    hashes = sorted({digest.hexdigest() for digest in digests})
    if len(hashes) != 1:
        raise RunFailure(f"repeated runs gave different outputs (hashes {hashes})")
    if save_to is not None:
        saved = outputs_of(backend, kept)
        save_outputs(save_to, saved.logits, saved.hidden)
    wall = timing.median_s
    peak_bytes, peak_kind = peak_memory(backend.device)
    return {
        "processes": 1, "threads_per_process": used_threads, "device": backend.device.type, "repeat": repeat,
        "wall_s": wall, "wall_s_all": list(timing.runs_s), "tokens_per_s": ids.numel() / wall,
        "peak_memory_bytes": peak_bytes, "peak_memory_kind": peak_kind, "output_sha256": hashes[0],
        "nonfinite_outputs": digests[0].nonfinite, "saved_outputs": None if save_to is None else str(save_to),
    }  # fmt: skip


__all__ = ["OutputCallback", "Timed", "measure"]
