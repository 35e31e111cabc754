"""The launcher's shared-memory progress board: each rank writes where it is, the launcher's watchdog reads it.

One row of doubles per rank (time of last progress, step, phase, peer, cell), written without locks (a
torn read only blurs a diagnostic). When no rank has moved for the timeout, the rows say who is computing
and who waits (on a peer, at a barrier, for the group to form), which is how a stall is blamed on the rank
that stopped answering. Private to ``launch.py`` (torchrun's ranks have no board).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rmtsched.sched import Cell

PHASES = ("starting", "setup", "compute", "recv", "send", "done", "join", "barrier")
# Phases in which a rank waits on others: the rank that stopped is never one of these.
WAITING = frozenset({"recv", "send", "join", "barrier"})
_FIELDS = 6  # time, step, phase, peer, layer, segment


@dataclass(frozen=True)
class RankPosition:
    """Where one rank last said it was."""

    rank: int
    seconds_ago: float
    step: int
    phase: str
    peer: int
    cell: Cell | None

    @property
    def waiting(self) -> bool:
        return self.phase in WAITING

    def describe(self) -> str:
        step = f"step {self.step}" if self.step >= 0 else "setup"
        cell = f" cell {tuple(self.cell)}" if self.cell is not None else ""
        if self.phase == "compute":
            return f"rank {self.rank} computing {step}{cell}"
        if self.phase == "recv":
            return f"rank {self.rank} at {step} waiting to receive the output of{cell} from rank {self.peer}"
        if self.phase == "send":
            return f"rank {self.rank} at {step} waiting for rank {self.peer} to take the output of{cell}"
        if self.phase == "barrier":
            return f"rank {self.rank} waiting for every rank at a barrier between runs"
        if self.phase == "join":
            return f"rank {self.rank} waiting for every rank to join the process group"
        return f"rank {self.rank} {self.phase} ({step})"


class ProgressBoard:
    """Rows in a shared ``RawArray`` made by the launcher's multiprocessing context."""

    def __init__(self, context: Any, world_size: int):
        self.world_size = world_size
        self.values = context.RawArray("d", world_size * _FIELDS)
        now = time.monotonic()
        for rank in range(world_size):
            self.values[rank * _FIELDS : (rank + 1) * _FIELDS] = [now, -1, 0, -1, -1, -1]

    def mark(self, rank: int, phase: str, step: int = -1, peer: int = -1, cell: Cell | None = None) -> None:
        layer, segment = cell if cell is not None else (-1, -1)
        row = rank * _FIELDS
        self.values[row + 1 : row + _FIELDS] = [step, PHASES.index(phase), peer, layer, segment]
        self.values[row] = time.monotonic()

    def position(self, rank: int) -> RankPosition:
        stamp, step, phase, peer, layer, segment = self.values[rank * _FIELDS : (rank + 1) * _FIELDS]
        cell = Cell(int(layer), int(segment)) if layer >= 0 else None
        return RankPosition(rank, time.monotonic() - stamp, int(step), PHASES[int(phase)], int(peer), cell)

    def idle_s(self) -> float:
        """Seconds since any rank last made progress."""
        return min(self.position(rank).seconds_ago for rank in range(self.world_size))
