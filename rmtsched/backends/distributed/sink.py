"""Where the last stage puts each segment's output: the run's ``OutputHash``, and host copies if asked.

The hash is ``rmtsched run``'s own (``session.OutputHash``: sha256 over each segment's output bytes in
segment order), so a run on one process and a run on P processes hash equal exactly when their outputs
are bit-for-bit equal. Putting outputs in segment order is the executor's ``OrderedDelivery``, not ours.
"""

from __future__ import annotations

import torch

from rmtsched.backends.torch.session import OutputHash


def outputs_sha256(outputs: list[torch.Tensor]) -> str:
    """The hash of outputs already in segment order (what ``rmtsched run`` prints as ``output_sha256``)."""
    digest = OutputHash()
    for segment, output in enumerate(outputs):
        digest(segment, output)
    return digest.hexdigest()


class SegmentSink:
    """A segment callback (``sink(segment, output)``, segments in order): hashes every output and, with
    ``keep_outputs``, keeps a host copy of each (a rank's report travels to the launcher by pickle)."""

    def __init__(self, keep_outputs: bool = False):
        self.keep_outputs = keep_outputs
        self.outputs: dict[int, torch.Tensor] = {}
        self.digest = OutputHash()

    def __call__(self, segment: int, output: torch.Tensor) -> None:
        self.digest(segment, output)
        if self.keep_outputs:
            self.outputs[segment] = output.detach().to("cpu", copy=True)

    @property
    def num_segments(self) -> int:
        return self.digest.segments

    def sha256(self) -> str:
        return self.digest.hexdigest()
