"""Errors of a distributed run: which rank failed, at which step, and how.

A failure in any rank ends the whole run; the launcher turns what it learned (a rank's exception, its exit
code, or the last step every rank reported before a stall) into one of these, so the message always names
the rank and the step.
"""

from __future__ import annotations

from rmtsched.errors import RmtschedError


class DistributedError(RmtschedError, RuntimeError):
    """A rank raised, died or stopped answering; ``rank`` and ``step`` say where (None when unknown).

    ``kind`` is ``"raised"``, ``"died"``, ``"stalled"``, ``"lost"`` (a peer reported losing this rank) or
    ``"config"``; ``remote_traceback`` is the
    failing rank's formatted traceback when it raised.
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
        super().__init__(message)
        self.kind = kind
        self.rank = rank
        self.step = step
        self.remote_traceback = remote_traceback


class StepFailure(RuntimeError):
    """Raised inside a rank when a step fails: wraps the cause with the step index, cells and phase."""

    def __init__(self, rank: int, step: int | None, where: str, cause: BaseException):
        super().__init__(f"rank {rank} failed at {where}: {type(cause).__name__}: {cause}")
        self.rank = rank
        self.step = step
        self.where = where
        self.cause = cause
