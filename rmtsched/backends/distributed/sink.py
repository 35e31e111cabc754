"""Where the last stage puts each segment's output: a hash in segment order, and the tensors if asked.

The hash is sha256 over the bytes of ``segment_output`` of segment 0, 1, ... in turn (C-contiguous, native
byte order), so a run on one process and a run on P processes of the same weights and inputs hash equal
exactly when their outputs are bit-for-bit equal. Outputs finished out of order wait until their turn.
"""

from __future__ import annotations

import hashlib

import torch


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of ``tensor`` on the host (any dtype, bf16 included)."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def outputs_sha256(outputs: list[torch.Tensor]) -> str:
    """The hash a ``SegmentSink`` computes, for outputs already in segment order."""
    digest = hashlib.sha256()
    for output in outputs:
        digest.update(tensor_bytes(output))
    return digest.hexdigest()


class SegmentSink:
    """Receives ``segment_output`` results, hashes them in segment order, optionally keeps copies on CPU."""

    def __init__(self, keep_outputs: bool = False):
        self.keep_outputs = keep_outputs
        self.outputs: dict[int, torch.Tensor] = {}
        self._digest = hashlib.sha256()
        self._next = 0
        self._waiting: dict[int, torch.Tensor] = {}

    def add(self, segment: int, output: torch.Tensor) -> None:
        host = output.detach().to("cpu", copy=True)
        if self.keep_outputs:
            self.outputs[segment] = host
        self._waiting[segment] = host
        while self._next in self._waiting:
            self._digest.update(tensor_bytes(self._waiting.pop(self._next)))
            self._next += 1

    @property
    def num_segments(self) -> int:
        return self._next

    def sha256(self) -> str:
        if self._waiting:
            raise RuntimeError(f"segments {sorted(self._waiting)} arrived but segment {self._next} never did")
        return self._digest.hexdigest()
