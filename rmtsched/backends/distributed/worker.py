"""One torchrun rank: read torchrun's environment, check everything, join the group, run this rank's stage.

``run_from_environment`` is what ``python -m rmtsched.cli.torchrun_worker`` (the entry point for
``torchrun``, on one machine or many) calls on every rank; rank 0 gets the pipelined run's result back and
the CLI module prints the record ``rmtsched run`` prints. Bad input (environment, options, spec, schedule)
is checked before joining the group and raised as bad input; a failed run (port in use, a peer lost, a
step that raised) as a ``DistributedError`` naming the rank and step.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from rmtsched.backends.distributed.errors import DistributedConfigError, DistributedError, StepFailure
from rmtsched.backends.distributed.job import RankJob, RankReport, rank_device, run_job
from rmtsched.backends.distributed.plan import build_plans
from rmtsched.backends.distributed.result import PipelineResult, summarise
from rmtsched.backends.torch.session import random_token_ids, resolve_device
from rmtsched.errors import RmtschedError, ScheduleError, SpecError
from rmtsched.sched import CellGraph, Schedule, graph_for_tokens, make_schedule
from rmtsched.specs.model import ModelSpec, load_model_spec
from rmtsched.specs.run_options import run_config

# The builder of rmtsched's own ARMT/RMT: builder(spec, *, seed, dtype, device) -> RecurrentModel.
DEFAULT_BUILDER = "rmtsched.backends.torch:build_model"


def load_builder(path: str) -> Callable[..., object]:
    """Import ``MODULE:FUNCTION``; a missing one is a configuration error that names it."""
    module_name, _, function_name = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise SpecError(f"cannot load model builder {path!r} ({exc}): expected MODULE:FUNCTION") from exc


def load_schedule(name_or_path: str, graph: CellGraph, world_size: int) -> Schedule:
    path = Path(name_or_path)
    if not path.is_file():
        return make_schedule(graph, name_or_path, num_devices=world_size)
    try:
        return Schedule.from_json(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ScheduleError(f"cannot read schedule file {name_or_path!r}: {exc}") from exc


@dataclass(frozen=True)
class TorchrunEnvironment:
    """What torchrun tells each worker: its rank, the world size, its GPU, and the rendezvous address."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def read_environment(environ: Mapping[str, str] = os.environ) -> TorchrunEnvironment:
    """RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (and LOCAL_RANK, default RANK), checked before anything
    is built: a missing or malformed one is a configuration error that names it and its value."""
    missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if not environ.get(name)]
    if missing:
        raise DistributedConfigError(
            f"environment variable(s) {', '.join(missing)} not set: expected RANK, WORLD_SIZE, MASTER_ADDR and "
            "MASTER_PORT as torchrun sets them (run this module under torchrun)",
            kind="config",
        )
    world_size = _environment_int(environ, "WORLD_SIZE", 1, None)
    rank = _environment_int(environ, "RANK", 0, world_size - 1)
    local_rank = _environment_int(environ, "LOCAL_RANK", 0, None, default=rank)
    port = _environment_int(environ, "MASTER_PORT", 1, 65535)
    return TorchrunEnvironment(rank, world_size, local_rank, environ["MASTER_ADDR"], port)


def _environment_int(
    environ: Mapping[str, str], name: str, low: int, high: int | None, default: int | None = None
) -> int:
    text = environ.get(name)
    if not text and default is not None:
        return default
    expected = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or value < low or (high is not None and value > high):
        raise DistributedConfigError(f"environment variable {name}={text!r}: expected {expected}", kind="config")
    return value


def check_options(args: argparse.Namespace) -> None:
    """The numbers ``rmtsched run`` would refuse, refused here too (before any rank waits on another)."""
    positive = {"--seq-len": args.seq_len, "--batch": args.batch, "--repeat": args.repeat}
    positive |= {"--segment-len": args.segment_len, "--threads": args.threads}  # None: not given
    for option, value in positive.items():
        if value is not None and value <= 0:
            raise SpecError(f"{option}: expected a positive integer, got {value}")
    for option, value in {"--mem-tokens": args.mem_tokens, "--seed": args.seed}.items():
        if value is not None and value < 0:
            raise SpecError(f"{option}: expected a non-negative integer, got {value}")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise SpecError(f"--timeout: expected a positive, finite number of seconds, got {args.timeout}")


@dataclass(frozen=True)
class WorkerResult:
    """Rank 0's outcome: the pipelined run's result and what the worker knows beside it (model, threads)."""

    result: PipelineResult
    context: dict[str, Any]


def run_from_environment(args: argparse.Namespace) -> WorkerResult | None:
    """Join the group torchrun describes, run this rank, return the result on rank 0 (None elsewhere).

    Everything that can be checked alone (environment, options, spec, schedule, builder, device) is checked
    before joining, so bad input fails at once on every rank instead of as a peer's timeout.
    """
    env = read_environment()
    check_options(args)
    device, dtype = resolve_device(args.device, args.dtype)
    if device.type == "cuda" and env.local_rank >= torch.cuda.device_count():
        raise DistributedConfigError(
            f"LOCAL_RANK={env.local_rank} but this machine has {torch.cuda.device_count()} GPU(s)", kind="config"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = _spec(args)
    graph = graph_for_tokens(spec, args.seq_len)
    schedule = load_schedule(args.schedule, graph, env.world_size)
    plan = build_plans(schedule, graph, env.world_size, spec.dependency_rule == "global_memory")[env.rank]
    builder = load_builder(args.builder)
    inputs = random_token_ids(spec, args.seq_len, args.seed, batch_size=args.batch)  # as rmtsched run draws them
    factory = functools.partial(builder, spec, seed=args.seed, dtype=dtype)
    job = RankJob(factory, inputs if plan.runs_first_layer else None, args.batch, plan, args.repeat)
    backend = "nccl" if device.type == "cuda" else "gloo"
    _join_group(env, backend, args.timeout)
    try:
        reports = _run_rank(job, rank_device(args.device, env.local_rank), env)
    finally:
        dist.destroy_process_group()
    if env.rank != 0:
        return None
    result = summarise(reports, schedule, graph, batch_size=args.batch, backend=backend, device=args.device,
                       keep_outputs=False)  # fmt: skip
    context = {
        "model": spec.name, "family": spec.family, "layers": spec.num_layers, "seq_len": args.seq_len,
        "segment_len": spec.segment_len, "dtype": args.dtype, "processes": env.world_size,
        "threads_per_process": torch.get_num_threads(),
    }  # fmt: skip
    return WorkerResult(result, context)


def _join_group(env: TorchrunEnvironment, backend: str, timeout_s: float) -> None:
    """``init_process_group`` from the environment; a port in use, an unreachable master or peers that never
    come are a failed run (one line naming the address), not a traceback."""
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, OSError, ValueError) as exc:
        raise DistributedError(
            f"rank {env.rank} could not join the process group at {env.master_addr}:{env.master_port} "
            f"(world size {env.world_size}, timeout {timeout_s:g} s): {_first_line(exc)}",
            kind="join",
            rank=env.rank,
        ) from exc


def _run_rank(job: RankJob, device: torch.device, env: TorchrunEnvironment) -> list[RankReport] | None:
    """Run this rank's job and gather every report on rank 0; a failure names the rank and the step."""
    try:
        report = run_job(job, device)
        reports = [None] * env.world_size if env.rank == 0 else None
        dist.gather_object(report, reports, dst=0)
    except StepFailure as exc:
        error_type = DistributedConfigError if isinstance(exc.cause, RmtschedError) else DistributedError
        raise error_type(str(exc), kind="raised", rank=exc.rank, step=exc.step) from exc
    except RuntimeError as exc:  # a collective failed: a peer died or timed out
        raise DistributedError(
            f"rank {env.rank} lost its peers: {_first_line(exc)}", kind="lost", rank=env.rank
        ) from exc
    return reports


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _spec(args: argparse.Namespace) -> ModelSpec:
    return load_model_spec(args.model).replace(**run_config(args).spec_overrides)
