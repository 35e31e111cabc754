"""The body of one process started by rmtsched's launcher: join the group, run the job, report back.

Private to ``launch.py``. The child reports to the parent over a pipe (a result, or an error naming the
step), marks its progress on the shared board, and ends as soon as the launcher does (``lifeline``), so no
rank can outlive a killed launcher. Torch and this module are preloaded by the forkserver, so starting a
rank costs milliseconds.
"""

from __future__ import annotations

import datetime
import pickle
import sys
import traceback
from multiprocessing.connection import Connection

import torch
import torch.distributed as dist

from rmtsched.backends.distributed._board import ProgressBoard
from rmtsched.backends.distributed.errors import PeerLost, StepFailure
from rmtsched.backends.distributed.job import LaunchedJob, rank_device
from rmtsched.backends.distributed.lifeline import exit_with
from rmtsched.errors import RmtschedError


def child_main(
    rank: int,
    world_size: int,
    store_port: int,
    backend: str,
    device: str,
    blob: bytes,
    connection: Connection,
    board: ProgressBoard,
    group_timeout_s: float,
    threads: int,
    sys_path: list[str],
    launcher_pid: int,
) -> None:
    exit_with(launcher_pid)
    # The job may name a factory from a module on the parent's path (a test, a plug-in): import it from there.
    sys.path[:0] = [path for path in sys_path if path not in sys.path]
    board.mark(rank, "setup")
    status = 1
    try:
        torch.set_num_threads(threads)
        job: LaunchedJob = pickle.loads(blob)
        timeout = datetime.timedelta(seconds=group_timeout_s)
        board.mark(rank, "join")
        store = dist.TCPStore("127.0.0.1", store_port, world_size, is_master=False, timeout=timeout)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
        board.mark(rank, "setup")
        # A forward ``RankJob`` or a training ``TrainRankJob``: each knows how to run itself on this rank.
        report = job.run(
            rank_device(device, rank),
            progress=lambda step, phase, peer, cell: board.mark(rank, phase, step, peer, cell),
        )
        board.mark(rank, "done")
        connection.send_bytes(pickle.dumps(("ok", report)))
        dist.destroy_process_group()
        status = 0
    except Exception as exc:
        connection.send_bytes(pickle.dumps(("error", failure_record(rank, exc))))
    finally:
        connection.close()
    sys.exit(status)


def failure_record(rank: int, exc: BaseException) -> dict:
    """What the parent needs to name the failure: rank, step, where, the error and its traceback, and
    whether the cause was bad input (a checkpoint or factory the rank refused) rather than a failed run."""
    cause = exc.cause if isinstance(exc, StepFailure) else exc
    return {
        "rank": rank,
        "step": exc.step if isinstance(exc, StepFailure) else None,
        "where": exc.where if isinstance(exc, StepFailure) else "setup",
        "error": f"{type(cause).__name__}: {cause}",
        "traceback": "".join(traceback.format_exception(cause)),
        "lost_peer": cause.peer if isinstance(cause, PeerLost) else None,
        "bad_input": isinstance(cause, RmtschedError),
    }
