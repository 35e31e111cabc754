"""Exception types shared by every layer of rmtsched.

Every error a user can trigger with bad input derives from ``RmtschedError`` so the CLI can turn it into
one line on stderr (exit status 2); the message always names the bad value and what was expected. A run
that fails for another reason (a rank died, out of memory, an I/O error) raises ``RunFailure`` (exit 3).
"""


class RmtschedError(Exception):
    """Base class for errors caused by bad input (arguments, graphs, schedules, files)."""


class GraphError(RmtschedError, ValueError):
    """A cell graph is malformed: a cycle, an edge to a cell outside the grid, a bad size."""


class ScheduleError(RmtschedError, ValueError):
    """A schedule is invalid for its graph, or a scheduler cannot produce one for these options."""


class SpecError(RmtschedError, ValueError):
    """A model or hardware spec is malformed or unknown."""


class CheckpointError(RmtschedError, ValueError):
    """A checkpoint is missing keys, has mis-shaped tensors, or cannot be read."""


class RunFailure(Exception):
    """The input was fine but the run itself failed: a rank died or stalled, memory ran out, I/O broke."""
