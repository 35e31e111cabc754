"""rmtsched's own launcher: P local processes (gloo on CPU, NCCL on P GPUs), watched until they finish.

``run_pipelined`` checks the configuration and plans every rank before starting anything (bad
configurations fail fast), starts one process per rank (forkserver by default: torch is imported once, so a
launch costs a fraction of a second), serves the rendezvous store itself on a port the OS picks, and then
watches: a rank that raises, dies, or a run where no rank moves for ``timeout_s`` ends every rank and raises
a ``DistributedError`` naming the rank and the step. SIGTERM or SIGHUP to the launcher ends every rank the
same way; a launcher killed outright is outlived by no rank (each watches its pid, see ``lifeline``).
Nothing partial is ever returned as a success. Why not torch's elastic agent (``torch.distributed.launcher``):
it names a failed rank and forwards SIGTERM too, but cannot tell a stalled rank from one waiting on it,
leaves its workers running when it is SIGKILLed, may hand workers a port found free but not reserved, and
spawns each worker with a fresh torch import; torchrun (that agent) remains the way to run on several
machines (``worker.py``).
"""

from __future__ import annotations

import contextlib
import datetime
import multiprocessing
import os
import pickle
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import torch
import torch.distributed as dist

from rmtsched.backends.distributed._board import ProgressBoard, RankPosition
from rmtsched.backends.distributed._rank import child_main
from rmtsched.backends.distributed.errors import DistributedConfigError, DistributedError, RankFault
from rmtsched.backends.distributed.job import LaunchedJob, ModelFactory, RankJob
from rmtsched.backends.distributed.plan import RankPlan, build_plans
from rmtsched.backends.distributed.result import PipelineResult, summarise
from rmtsched.sched import CellGraph, Schedule, graph_for_tokens, grid_note, make_schedule, warmup_graph

_POLL_S = 0.1
_KILL_GRACE_S = 2.0
_BLAME_GRACE_S = 1.0
# How gloo (and the OS) report a peer that went away, in errors that name no peer.
_PEER_GONE = re.compile(r"Connection reset by peer|Connection closed by peer|Broken pipe|Connection refused", re.I)
_STARTUP_S = 60.0
_ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def run_pipelined(
    model_factory: ModelFactory,
    inputs: torch.Tensor,
    *,
    num_procs: int,
    layout: Any = None,
    schedule: Schedule | str = "pipelined",
    max_width: int | None = None,
    device: str = "cpu",
    threads_per_proc: int | None = None,
    timeout_s: float = 30.0,
    repeat: int = 1,
    keep_outputs: bool = False,
    warmup: bool = True,
    start_method: str = "forkserver",
) -> PipelineResult:
    """Run ``schedule`` (a ``Schedule``, or a scheduler name given ``num_devices=num_procs`` and ``max_width``;
    default ``pipelined``) on ``num_procs`` local processes; return the median makespan, hash, per-rank times.

    ``model_factory(device=...)`` must build the same model in every process (a module-level function or a
    ``functools.partial`` of one, seeded); ``layout`` is anything with ``num_layers``, ``segment_len`` and
    ``dependency_rule`` (a ``ModelSpec`` or a model) and defaults to a model the factory builds here.
    ``threads_per_proc`` defaults to this process's intra-op threads split evenly (at least one each).
    ``timeout_s`` bounds how long the run may go without any rank making progress. With
    ``keep_outputs`` the result carries every segment's output and the final states of every layer. With
    ``warmup`` (and a schedule given by name) each rank first runs the same scheduler on a short prefix,
    untimed, like ``rmtsched run``'s warm-up.
    """
    if threads_per_proc is None:
        threads_per_proc = max(1, torch.get_num_threads() // max(1, num_procs))
    _check_arguments(num_procs, device, threads_per_proc, timeout_s, repeat)
    if not isinstance(inputs, torch.Tensor) or inputs.dim() not in (2, 3) or inputs.shape[1] == 0:
        shape = list(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise DistributedConfigError(
            f"inputs must be token ids [batch, tokens] or embeddings [batch, tokens, d_model] with at least one "
            f"token, got {shape}",
            kind="config",
        )
    layout = layout if layout is not None else model_factory(device=torch.device("cpu"))
    graph = graph_for_tokens(layout, int(inputs.shape[1]))
    uses_previous_output = _uses_previous_output(layout, graph)
    warmups: list[RankPlan | None] = [None] * num_procs
    if isinstance(schedule, str):
        if warmup:
            warmups = _warmup_plans(graph, schedule, num_procs, max_width, uses_previous_output)
        schedule = make_schedule(graph, schedule, num_devices=num_procs, max_width=max_width)
    plans = build_plans(schedule, graph, num_procs, uses_previous_output)
    jobs = [
        RankJob(
            model_factory, inputs if plan.runs_first_layer else None, int(inputs.shape[0]), plan, repeat, keep_outputs,
            warm if warm is not None and warm.layers == plan.layers else None,
        )
        for plan, warm in zip(plans, warmups, strict=True)
    ]  # fmt: skip
    blobs = [_pickle_job(job) for job in jobs]
    backend = "nccl" if device == "cuda" else "gloo"
    try:
        reports = _launch(blobs, backend, device, threads_per_proc, timeout_s, start_method)
    except (DistributedError, DistributedConfigError) as exc:
        if exc.step is not None and "warm-up" not in str(exc):  # warm-up steps index the warm-up schedule
            exc.add_note(grid_note(schedule, graph, schedule.steps[exc.step].cells))
        raise
    return summarise(
        reports,
        schedule,
        graph,
        batch_size=int(inputs.shape[0]),
        backend=backend,
        device=device,
        keep_outputs=keep_outputs,
    )


def _check_arguments(num_procs: int, device: str, threads: int, timeout_s: float, repeat: int) -> None:
    if not isinstance(num_procs, int) or num_procs <= 0:
        raise DistributedConfigError(
            f"number of processes must be a positive integer, got {num_procs!r}", kind="config"
        )
    if device not in ("cpu", "cuda"):
        raise DistributedConfigError(f"device must be 'cpu' or 'cuda', got {device!r}", kind="config")
    if device == "cuda" and torch.cuda.device_count() < num_procs:
        raise DistributedConfigError(
            f"{num_procs} processes on CUDA need {num_procs} GPUs, found {torch.cuda.device_count()}", kind="config"
        )
    if not isinstance(threads, int) or threads <= 0:
        raise DistributedConfigError(f"threads per process must be a positive integer, got {threads!r}", kind="config")
    if not timeout_s > 0:
        raise DistributedConfigError(f"timeout must be positive seconds, got {timeout_s!r}", kind="config")
    if not isinstance(repeat, int) or repeat <= 0:
        raise DistributedConfigError(f"repeat must be a positive integer, got {repeat!r}", kind="config")


def _warmup_plans(
    graph: CellGraph, scheduler: str, num_procs: int, max_width: int | None, uses_previous_output: bool
) -> list[RankPlan]:
    """Plans of the same scheduler on ``warmup_graph(graph)``: every step shape of the full run, cheaply."""
    prefix_graph = warmup_graph(graph)
    schedule = make_schedule(prefix_graph, scheduler, num_devices=num_procs, max_width=max_width)
    return build_plans(schedule, prefix_graph, num_procs, uses_previous_output)


def _uses_previous_output(layout: Any, graph: CellGraph) -> bool:
    """A model says so itself; a ``ModelSpec`` does not, and then the global-memory rule implies it."""
    flag = getattr(layout, "uses_previous_output", None)
    return bool(flag) if flag is not None else graph.rule.name == "global_memory"


def _pickle_job(job: LaunchedJob) -> bytes:
    try:
        return pickle.dumps(job)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise DistributedConfigError(
            f"the model factory {job.model_factory!r} cannot be sent to a worker process ({exc}): use a "
            "module-level function or a functools.partial of one",
            kind="config",
        ) from exc


def _launch(
    blobs: Sequence[bytes],
    backend: str,
    device: str,
    threads: int,
    timeout_s: float,
    start_method: str,
) -> list[Any]:
    """Start one process per pickled job, serve their rendezvous, and return their reports in rank order."""
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        context.set_forkserver_preload(["torch", "rmtsched.backends.distributed._rank"])
    world_size = len(blobs)
    # The parent serves the rendezvous store on a port the OS picks: no race for a "free" port.
    store = dist.TCPStore(
        "127.0.0.1", 0, None, is_master=True, timeout=datetime.timedelta(seconds=timeout_s), wait_for_workers=False
    )
    board = ProgressBoard(context, world_size)
    # Ranks' own process-group timeout is longer than the watchdog's, so the watchdog (which can blame the
    # rank everyone waits on) speaks first.
    group_timeout_s = 2 * timeout_s + 10
    processes, connections = [], []
    try:
        with _ended_by_signals():
            for rank, blob in enumerate(blobs):
                receiver, sender = context.Pipe(duplex=False)
                args = (rank, world_size, store.port, backend, device, blob, sender, board, group_timeout_s, threads,
                        list(sys.path), os.getpid())  # fmt: skip
                process = context.Process(target=child_main, args=args, name=f"rmtsched-rank-{rank}", daemon=True)
                process.start()
                sender.close()
                processes.append(process)
                connections.append(receiver)
            return _watch(processes, connections, board, timeout_s)
    finally:
        _end_all(processes)
        for connection in connections:
            connection.close()
        del store


@contextlib.contextmanager
def _ended_by_signals() -> Iterator[None]:
    """While ranks run, SIGTERM and SIGHUP raise a ``DistributedError`` here, so the caller's ``finally``
    ends every rank and the run fails with one line; the previous handlers come back afterwards. Only the
    main thread can take signals; elsewhere the ranks' lifeline still ends them if the launcher dies."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def end(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        raise DistributedError(f"the launcher received {name}: every rank was ended", kind="ended")

    previous = {sig: signal.signal(sig, end) for sig in _ENDING_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _watch(
    processes: list[Any], connections: list[Connection], board: ProgressBoard, timeout_s: float
) -> list[Any]:
    """Collect one report per rank, or raise as soon as any rank fails or nothing moves for ``timeout_s``.

    A rank whose peer vanished reports that too, often before the peer's own death is seen; such a
    secondary error is held for a moment so the first cause (the rank that raised or died) is the one named.
    """
    reports: dict[int, Any] = {}
    finished: set[int] = set()
    secondary: DistributedError | None = None
    blame_deadline = float("inf")
    while len(reports) < len(processes):
        waiting = [rank for rank in range(len(processes)) if rank not in finished]
        handles = [connections[rank] for rank in waiting] + [processes[rank].sentinel for rank in waiting]
        ready = set(wait(handles, timeout=_POLL_S))
        for rank in waiting:
            if connections[rank] in ready or (processes[rank].sentinel in ready and connections[rank].poll()):
                finished.add(rank)
                outcome = _receive(rank, connections[rank], processes[rank], board)
                if not isinstance(outcome, RankFault):
                    reports[rank] = outcome
                elif outcome.kind != "lost":
                    raise outcome
                elif secondary is None:
                    secondary, blame_deadline = outcome, time.monotonic() + _BLAME_GRACE_S
            elif processes[rank].sentinel in ready:
                processes[rank].join()
                raise _died(rank, processes[rank].exitcode, board)
        if secondary is not None and (time.monotonic() > blame_deadline or len(finished) == len(processes)):
            raise secondary
        unfinished = [rank for rank in range(len(processes)) if rank not in reports]
        # Starting a process (importing torch, under spawn) is not a stall; it gets its own allowance.
        starting = any(board.position(rank).phase == "starting" for rank in unfinished)
        limit = max(timeout_s, _STARTUP_S) if starting else timeout_s
        if unfinished and board.idle_s() > limit:
            raise _stalled(board, limit, unfinished)
    return [reports[rank] for rank in range(len(processes))]


def _receive(rank: int, connection: Connection, process: Any, board: ProgressBoard) -> Any:
    """The rank's report, or the ``DistributedError`` (``DistributedConfigError``) its failure amounts to."""
    try:
        status, payload = pickle.loads(connection.recv_bytes())
    except (EOFError, OSError):  # the pipe closed with no message: the rank is dying or dead
        process.join(_KILL_GRACE_S)
        return _died(rank, process.exitcode, board)
    if status == "ok":
        return payload
    lost = payload["lost_peer"]
    if lost is not None:
        last_seen = board.position(lost)
        return DistributedError(
            f"rank {lost} stopped answering (last seen {last_seen.describe().removeprefix(f'rank {lost} ')}): "
            f"rank {payload['rank']} failed at {payload['where']}: {payload['error']}",
            kind="lost",
            rank=lost,
            step=last_seen.step if last_seen.step >= 0 else None,
            remote_traceback=payload["traceback"],
        )
    # A transport error naming no peer (gloo's "Connection reset by peer" during the group's setup, before any
    # step names one) is a consequence: held like "lost", so that the peer's own death, if seen, is raised.
    gone = not payload["bad_input"] and _PEER_GONE.search(payload["error"]) is not None
    error_type = DistributedConfigError if payload["bad_input"] else DistributedError
    return error_type(
        f"rank {payload['rank']} {'lost a peer' if gone else 'failed'} at {payload['where']}: {payload['error']}",
        kind="lost" if gone else "raised",
        rank=payload["rank"],
        step=payload["step"],
        remote_traceback=payload["traceback"],
    )


def _died(rank: int, exitcode: int | None, board: ProgressBoard) -> DistributedError:
    position = board.position(rank)
    how = f"was killed by signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exited ({exitcode})"
    return DistributedError(
        f"rank {rank} {how} without a result; it was last seen {position.describe().removeprefix(f'rank {rank} ')}",
        kind="died",
        rank=rank,
        step=position.step if position.step >= 0 else None,
    )


def _stalled(board: ProgressBoard, timeout_s: float, unfinished: list[int]) -> DistributedError:
    positions = [board.position(rank) for rank in unfinished]
    blamed = stopped_rank(positions)
    return DistributedError(
        f"no rank made progress for {timeout_s:g} s: rank {blamed.rank} stopped answering at "
        f"{'step ' + str(blamed.step) if blamed.step >= 0 else 'setup'}; " + "; ".join(p.describe() for p in positions),
        kind="stalled",
        rank=blamed.rank,
        step=blamed.step if blamed.step >= 0 else None,
    )


def stopped_rank(positions: list[RankPosition]) -> RankPosition:
    """The rank that stopped, when none moves: never one that waits (on a peer, at a barrier, to join);
    among the others, one that a peer waits on, else the one that moved longest ago."""
    busy = [p for p in positions if not p.waiting] or positions
    waited_on = {p.peer for p in positions if p.phase in ("recv", "send")}
    candidates = [p for p in busy if p.rank in waited_on] or busy
    return max(candidates, key=lambda p: p.seconds_ago)


def _end_all(processes: list[Any]) -> None:
    """Terminate every rank still running, then kill what ignores that; join all so none is left a zombie."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(_KILL_GRACE_S)
        if process.is_alive():
            process.kill()
            process.join()
