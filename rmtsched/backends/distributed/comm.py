"""Point-to-point transport of hidden states between ranks, non-blocking so it overlaps compute.

Both ends know from the plan which cells cross each channel (src -> dst) and in which order, so a message
carries only the tensor. Its shape depends on the model (tokens per cell, d_model) and on the segment's
token count; the first message of each token count on a channel is preceded by a small header with dtype
and shape, after which the receiver allocates buffers itself. Receives are posted a few cells ahead so data
lands while the rank computes; sends are ``isend`` and only waited for at the end of a run.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import torch
import torch.distributed as dist

from rmtsched.backends.distributed.errors import PeerLost
from rmtsched.backends.distributed.plan import RankPlan
from rmtsched.sched import Cell

_HEADER_LEN = 8  # dtype code, ndim, up to six dimensions
_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64, torch.int32)
# What a message carries about its cell: inference sends only "hidden"; training also sends the memory state
# and the gradients of both (the training runner's mailbox kinds).
KINDS = ("hidden", "state", "grad_hidden", "grad_state")


def message_tag(kind: str, cell: Cell, num_layers: int, num_segments: int, header: bool) -> int:
    """The tag of ``kind`` of ``cell`` (or of its header): distinct for every (kind, cell, header)."""
    slot = (KINDS.index(kind) * num_layers + cell.layer) * num_segments + cell.segment
    return 2 * slot + (0 if header else 1)


def _encode_header(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dtype not in _DTYPES or tensor.dim() > _HEADER_LEN - 2:
        raise ValueError(f"cannot send a {tensor.dtype} tensor of shape {tuple(tensor.shape)} between ranks")
    header = [_DTYPES.index(tensor.dtype), tensor.dim(), *tensor.shape]
    return torch.tensor(header + [0] * (_HEADER_LEN - len(header)), dtype=torch.int64, device=tensor.device)


def _decode_header(header: torch.Tensor) -> tuple[torch.dtype, tuple[int, ...]]:
    values = header.tolist()
    return _DTYPES[values[0]], tuple(values[2 : 2 + values[1]])


class _Pending:
    """One posted receive: the header (only on the first cell of its token count) and then the payload."""

    def __init__(self, cell: Cell, key: tuple[int, int], header: tuple[dist.Work, torch.Tensor] | None):
        self.cell = cell
        self.key = key
        self.header = header
        self.payload: tuple[dist.Work, torch.Tensor] | None = None


class Waits:
    """Blocking waits on messages, reported and timed: the part every link between ranks shares.

    ``on_wait(phase, peer, cell)`` is called before a blocking wait (and with phase "compute" after it), so
    the launcher can tell which rank waits on which when nothing moves; ``wait_s`` sums the time blocked.
    A failed message raises ``PeerLost`` naming the peer.
    """

    def __init__(self, on_wait: Callable[[str, int, Cell], None] | None = None):
        self.on_wait = on_wait or (lambda phase, peer, cell: None)
        self.wait_s = 0.0

    def _blocking_wait(self, work: dist.Work, phase: str, peer: int, cell: Cell) -> None:
        if work.is_completed():
            self._wait(work, phase, peer, cell)
            return
        self.on_wait(phase, peer, cell)
        start = time.perf_counter()
        self._wait(work, phase, peer, cell)
        self.wait_s += time.perf_counter() - start
        self.on_wait("compute", peer, cell)

    @staticmethod
    def _wait(work: dist.Work, phase: str, peer: int, cell: Cell) -> None:
        try:
            work.wait()
        except RuntimeError as exc:
            raise PeerLost(peer, cell, phase, exc) from exc


class PeerLink(Waits):
    """This rank's sends and receives of hidden states for one run of its plan (waits as ``Waits`` says)."""

    def __init__(
        self,
        plan: RankPlan,
        device: torch.device,
        *,
        lookahead: int = 2,
        on_wait: Callable[[str, int, Cell], None] | None = None,
    ):
        super().__init__(on_wait)
        self.plan = plan
        self.device = device
        self.lookahead = lookahead
        self._sent_shapes: set[tuple[int, int]] = set()
        self._known_shapes: dict[tuple[int, int], tuple[torch.dtype, tuple[int, ...]]] = {}
        self._queued: dict[int, deque[Cell]] = {src: deque(cells) for src, cells in plan.recvs.items()}
        self._posted: dict[int, deque[_Pending]] = {src: deque() for src in plan.recvs}
        # The first cell of each token count on a channel carries a header; both ends derive the same set.
        self._header_cells = {cell for cells in plan.recvs.values() for cell in self._first_of_each_length(cells)}
        self._sends: list[tuple[dist.Work, torch.Tensor, int, Cell]] = []

    # -- sending ---------------------------------------------------------------------------------
    def send(self, tensor: torch.Tensor, cell: Cell, dst: int) -> None:
        """Start sending ``cell``'s output to ``dst``; the tensor is kept alive until the send completes."""
        tensor = tensor.contiguous()
        key = (dst, self._token_class(cell))
        if key not in self._sent_shapes:
            self._sent_shapes.add(key)
            header = _encode_header(tensor)
            self._sends.append((dist.isend(header, dst, tag=self._tag(cell, True)), header, dst, cell))
        self._sends.append((dist.isend(tensor, dst, tag=self._tag(cell, False)), tensor, dst, cell))
        self._reap_sends()

    def _reap_sends(self) -> None:
        """Forget completed sends (``wait`` on a completed one only re-raises a transport error)."""
        still_running = []
        for entry in self._sends:
            if entry[0].is_completed():
                self._blocking_wait(entry[0], "send", entry[2], entry[3])
            else:
                still_running.append(entry)
        self._sends = still_running

    def finish(self) -> None:
        """Wait for every send of this run (a receiver that never takes one times out in the process group)."""
        for work, _, dst, cell in self._sends:
            self._blocking_wait(work, "send", dst, cell)
        self._sends.clear()
        leftover = {
            src: [tuple(p.cell) for p in self._posted[src]] + [tuple(c) for c in queue]
            for src, queue in self._queued.items()
            if queue or self._posted[src]
        }
        if leftover:
            raise RuntimeError(f"rank {self.plan.rank} never received planned outputs {leftover}")

    # -- receiving -------------------------------------------------------------------------------
    def recv(self, cell: Cell, src: int) -> torch.Tensor:
        """The output of ``cell`` from rank ``src``, waiting for it if it has not arrived yet."""
        posted = self._posted[src]
        if not posted:
            self._post_next(src)
        if not posted or posted[0].cell != cell:
            head = tuple(posted[0].cell) if posted else None
            raise RuntimeError(
                f"rank {self.plan.rank} needs {tuple(cell)} from rank {src}, but the next output planned on "
                f"that channel is {head}"
            )
        pending = posted.popleft()
        if pending.payload is None:
            self._complete_header(pending, src, block=True)
        work, buffer = pending.payload
        self._blocking_wait(work, "recv", src, cell)
        self.prefetch()
        return buffer

    def prefetch(self) -> None:
        """Post receives up to ``lookahead`` cells ahead on every channel, without ever blocking.

        Receives are posted strictly in channel order (NCCL matches messages by order, not tag), so a cell
        whose header has not arrived holds back the ones behind it.
        """
        for src, posted in self._posted.items():
            if posted and posted[-1].payload is None:
                self._complete_header(posted[-1], src, block=False)
            while len(posted) < self.lookahead and (not posted or posted[-1].payload is not None):
                if not self._post_next(src):
                    break

    def _post_next(self, src: int) -> bool:
        queue = self._queued[src]
        if not queue:
            return False
        cell = queue.popleft()
        key = (src, self._token_class(cell))
        header = None
        if cell in self._header_cells:
            buffer = torch.empty(_HEADER_LEN, dtype=torch.int64, device=self.device)
            header = (dist.irecv(buffer, src, tag=self._tag(cell, True)), buffer)
        pending = _Pending(cell, key, header)
        self._posted[src].append(pending)
        if header is None:
            self._post_payload(pending, src)
        return True

    def _complete_header(self, pending: _Pending, src: int, *, block: bool) -> None:
        work, buffer = pending.header
        if not block and not work.is_completed():
            return
        self._blocking_wait(work, "recv", src, pending.cell)
        self._known_shapes[pending.key] = _decode_header(buffer)
        pending.header = None
        self._post_payload(pending, src)

    def _post_payload(self, pending: _Pending, src: int) -> None:
        dtype, shape = self._known_shapes[pending.key]
        buffer = torch.empty(shape, dtype=dtype, device=self.device)
        pending.payload = (dist.irecv(buffer, src, tag=self._tag(pending.cell, False)), buffer)

    # -- helpers ---------------------------------------------------------------------------------
    def _first_of_each_length(self, cells: tuple[Cell, ...]) -> list[Cell]:
        first: dict[int, Cell] = {}
        for cell in cells:
            first.setdefault(self._token_class(cell), cell)
        return list(first.values())

    def _token_class(self, cell: Cell) -> int:
        return self.plan.segment_tokens[cell.segment]

    def _tag(self, cell: Cell, header: bool) -> int:
        return message_tag("hidden", cell, self.plan.num_layers, self.plan.num_segments, header)
