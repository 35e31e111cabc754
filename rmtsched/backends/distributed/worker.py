"""Entry point for ``torchrun``: one process per device, on one machine or many.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; every rank builds the same model
from the spec and seed, plans its stage, runs it, and rank 0 prints the JSON that ``rmtsched run`` prints.
Two machines with 4 GPUs each (run the same command on both, ``--node-rank`` 0 and 1)::

    torchrun --nnodes 2 --nproc-per-node 4 --node-rank 0 --master-addr HOST0 --master-port 29500 \\
        -m rmtsched.backends.distributed.worker --model armt-llama-8b --seq-len 1048576 \\
        --device cuda --dtype bf16 --json

One machine, CPU, two ranks::

    torchrun --standalone --nproc-per-node 2 -m rmtsched.backends.distributed.worker \\
        --model armt-small --seq-len 4096 --threads 1 --json

Like ``rmtsched run``, bad input (environment, options, spec, schedule) is one line on stderr and exit 2,
checked before joining the group; a failed run (port in use, a peer lost, a step that raised) one line
naming the rank and step, exit 3; never a traceback. torchrun then ends the other ranks; ranks blocked on
a dead peer give up after ``--timeout`` seconds, and every rank ends with torchrun's agent if it is killed.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from rmtsched.backends.distributed.errors import DistributedConfigError, DistributedError, StepFailure
from rmtsched.backends.distributed.job import RankJob, RankReport, rank_device, run_job
from rmtsched.backends.distributed.lifeline import exit_with
from rmtsched.backends.distributed.plan import build_plans
from rmtsched.backends.distributed.result import summarise
from rmtsched.backends.torch.session import random_token_ids, resolve_device
from rmtsched.errors import RmtschedError, RunFailure, ScheduleError, SpecError
from rmtsched.sched import CellGraph, Schedule, graph_for_tokens, make_schedule
from rmtsched.specs.model import ModelSpec, load_model_spec

DTYPES = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.bfloat16, "fp16": torch.float16}
# The builder of rmtsched's own ARMT/RMT: builder(spec, *, seed, dtype, device) -> RecurrentModel.
DEFAULT_BUILDER = "rmtsched.backends.torch:build_model"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rmtsched.backends.distributed.worker", description=__doc__)
    parser.add_argument("--model", required=True, help="a model preset name or a ModelSpec JSON file")
    parser.add_argument("--seq-len", type=int, required=True)
    parser.add_argument("--segment-len", type=int, default=None)
    parser.add_argument("--mem-tokens", type=int, default=None)
    parser.add_argument("--schedule", default="pipelined", help="'pipelined' or a schedule JSON file")
    parser.add_argument("--builder", default=DEFAULT_BUILDER, help="MODULE:FUNCTION(spec, *, seed, dtype, device)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads per rank (CPU)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a rank may wait on a peer")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (rank 0)")
    return parser


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


def run_from_environment(args: argparse.Namespace) -> dict | None:
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
    from rmtsched.cli.records import pipeline_record  # the record rmtsched run prints, built where it is

    return {
        "model": spec.name, "family": spec.family, "layers": spec.num_layers, "seq_len": args.seq_len,
        "segment_len": spec.segment_len, "dtype": args.dtype, "processes": env.world_size,
        "threads_per_process": torch.get_num_threads(), **pipeline_record(result),
    }  # fmt: skip


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
    spec = load_model_spec(args.model)
    changes = {"segment_len": args.segment_len, "mem_tokens": args.mem_tokens}
    return spec.replace(**{key: value for key, value in changes.items() if value is not None})


def main(argv: Sequence[str] | None = None) -> int:
    """Run one rank; exit 0, or one line on stderr and 2 (bad input) or 3 (the run failed)."""
    args = build_parser().parse_args(argv)
    try:
        result = run_from_environment(args)
    except (RmtschedError, RunFailure) as exc:
        message = " ".join(str(exc).split())
        who = "" if getattr(exc, "rank", None) is not None else f"rank {os.environ.get('RANK', '?')}: "
        print(f"rmtsched worker: {who}error: {message}", file=sys.stderr)
        return 2 if isinstance(exc, RmtschedError) else 3
    if result is not None:
        print(json.dumps(result) if args.json else _table(result))
    return 0


def _table(result: dict) -> str:
    lines = [
        f"{result['model']}: {result['seq_len']} tokens on {result['devices']} rank(s), "
        f"{result['wall_s']:.4f} s, {result['tokens_per_s']:.0f} tokens/s, bubble {result['bubble_fraction']:.1%}",
        f"output_sha256 {result['output_sha256']}",
    ]
    lines += [
        f"  rank {r['rank']}: layers {r['layers'][0]}..{r['layers'][1] - 1}, busy {r['busy_s']:.4f} s, "
        f"waiting {r['wait_s']:.4f} s"
        for r in result["ranks"]
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    # End with torchrun's agent, even one killed outright. Watching starts after the imports: an agent killed
    # in a worker's first seconds is not seen, and that worker ends at its --timeout instead.
    exit_with(os.getppid(), name="worker")
    sys.exit(main())
