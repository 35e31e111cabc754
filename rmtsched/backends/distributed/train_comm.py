"""Point-to-point transport of training values (hidden states, memory states and their gradients) between ranks.

Unlike the forward pipeline's ``PeerLink``, whose every planned message exists, a training value may be
absent at run time (RMT has no memory state; no gradient crosses a truncation cut), so every message has
its own header: dtype and shape, or "absent", followed by the payload when there is one. Messages are
tagged by (kind, cell) (``comm.message_tag``), so they match whatever order the two ends post them in.
Sends are ``isend`` and waited for at the end of the run; a receive blocks, reported as a wait on the peer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

from rmtsched.backends.distributed.comm import _HEADER_LEN, Waits, _decode_header, _encode_header, message_tag
from rmtsched.backends.distributed.train_plan import Crossing
from rmtsched.sched import Cell

_ABSENT = -1  # the dtype code of a header announcing no payload


class TrainLink(Waits):
    """This rank's sends and receives of one training run (waits reported and timed as ``Waits`` says)."""

    def __init__(
        self,
        num_layers: int,
        num_segments: int,
        device: torch.device,
        on_wait: Callable[[str, int, Cell], None] | None = None,
    ):
        super().__init__(on_wait)
        self.num_layers, self.num_segments, self.device = num_layers, num_segments, device
        self._sends: list[tuple[dist.Work, torch.Tensor, Crossing]] = []

    def send(self, crossing: Crossing, value: torch.Tensor | None) -> None:
        """Start sending ``value`` (None: announce it absent); it is kept alive until ``finish``."""
        if value is None:
            header = torch.tensor([_ABSENT] + [0] * (_HEADER_LEN - 1), dtype=torch.int64, device=self.device)
        else:
            value = value.detach().contiguous()
            header = _encode_header(value)
        self._isend(header, crossing, header=True)
        if value is not None:
            self._isend(value, crossing, header=False)

    def receive(self, crossing: Crossing) -> torch.Tensor | None:
        """``crossing``'s value from its peer (None if the peer announced it absent), waiting for it."""
        header = torch.empty(_HEADER_LEN, dtype=torch.int64, device=self.device)
        self._wait_for(dist.irecv(header, crossing.peer, tag=self._tag(crossing, header=True)), crossing)
        if int(header[0]) == _ABSENT:
            return None
        dtype, shape = _decode_header(header)
        value = torch.empty(shape, dtype=dtype, device=self.device)
        self._wait_for(dist.irecv(value, crossing.peer, tag=self._tag(crossing, header=False)), crossing)
        return value

    def finish(self) -> None:
        """Wait for every send of this run (a peer that never takes one times out in the process group)."""
        for work, _, crossing in self._sends:
            self._blocking_wait(work, "send", crossing.peer, crossing.cell)
        self._sends.clear()

    def _isend(self, tensor: torch.Tensor, crossing: Crossing, *, header: bool) -> None:
        work = dist.isend(tensor, crossing.peer, tag=self._tag(crossing, header=header))
        self._sends.append((work, tensor, crossing))

    def _wait_for(self, work: dist.Work, crossing: Crossing) -> None:
        self._blocking_wait(work, "recv", crossing.peer, crossing.cell)

    def _tag(self, crossing: Crossing, *, header: bool) -> int:
        return message_tag(crossing.kind, crossing.cell, self.num_layers, self.num_segments, header)


__all__ = ["TrainLink"]
