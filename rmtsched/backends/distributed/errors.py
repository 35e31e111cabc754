"""Errors of a distributed run: which rank failed, at which step, and how.

A failure in any rank ends the whole run; the launcher turns what it learned (a rank's exception, its exit
code, or the last step every rank reported before a stall) into one of these, so the message always names
the rank and the step. A run that failed is a ``RunFailure`` (exit 3); a configuration the ranks refused
(a bad checkpoint, a factory that builds the wrong model) is bad input (an ``RmtschedError``, exit 2).
Inside a rank, ``StepFailure`` and ``PeerLost`` carry the step and the peer to blame up to the launcher.
"""

from __future__ import annotations

from rmtsched.errors import RmtschedError, RunFailure
from rmtsched.sched import Cell


class RankFault:
    """Where a distributed run failed: ``kind``, ``rank`` and ``step`` (None when unknown).

    ``kind`` is ``"raised"``, ``"died"``, ``"stalled"``, ``"lost"`` (a peer reported losing this rank, or,
    when the transport named no peer, this rank reported losing one), ``"ended"`` (the launcher was told to
    stop), ``"join"`` (the group never formed) or ``"config"``; ``remote_traceback`` is the failing rank's
    formatted traceback when it raised. The message is always one line (a rank's exception may span many).
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        rank: int | None = None,
        step: int | None = None,
        remote_traceback: str = "",
    ):
        super().__init__(" ".join(message.split()))
        self.kind = kind
        self.rank = rank
        self.step = step
        self.remote_traceback = remote_traceback


class DistributedError(RankFault, RunFailure):
    """A rank raised, died or stopped answering, or the launcher was ended: the run failed (exit 3)."""


class DistributedConfigError(RankFault, RmtschedError, ValueError):
    """The run's configuration is unusable, found by the launcher or by a rank (bad input, exit 2)."""


class StepFailure(RuntimeError):
    """Raised inside a rank when a step fails: wraps the cause with the step index, cells and phase."""

    def __init__(self, rank: int, step: int | None, where: str, cause: BaseException):
        super().__init__(f"rank {rank} failed at {where}: {type(cause).__name__}: {cause}")
        self.rank = rank
        self.step = step
        self.where = where
        self.cause = cause


class PeerLost(RuntimeError):
    """A message to or from ``peer`` failed: usually that rank died or was ended, so it is the one to blame."""

    def __init__(self, peer: int, cell: Cell, phase: str, cause: BaseException):
        super().__init__(f"lost rank {peer} while waiting to {phase} the output of {tuple(cell)}: {cause}")
        self.peer = peer
