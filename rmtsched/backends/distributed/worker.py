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

A rank that fails prints the rank and step on stderr and exits non-zero; torchrun then ends the others,
and ranks blocked on a dead peer give up after ``--timeout`` seconds on their own.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from rmtsched.backends.distributed.errors import StepFailure
from rmtsched.backends.distributed.job import RankJob, run_job
from rmtsched.backends.distributed.plan import build_plans
from rmtsched.backends.distributed.rank import rank_device
from rmtsched.backends.distributed.result import summarise
from rmtsched.backends.torch.models import DTYPES
from rmtsched.backends.torch.session import random_token_ids
from rmtsched.errors import RmtschedError, SpecError
from rmtsched.sched import CellGraph, Schedule, graph_for_tokens, make_schedule
from rmtsched.specs.model import ModelSpec, load_model_spec
from rmtsched.specs.run_options import add_run_arguments, run_config

# The builder of rmtsched's own ARMT/RMT: builder(spec, *, seed, dtype, device) -> RecurrentModel.
DEFAULT_BUILDER = "rmtsched.backends.torch:build_model"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rmtsched.backends.distributed.worker", description=__doc__)
    add_run_arguments(parser, checkpoint=False, inputs=False)  # --model, --seq-len, ..., --seed: one RunConfig
    parser.add_argument("--schedule", default="pipelined", help="'pipelined' or a schedule JSON file")
    parser.add_argument("--builder", default=DEFAULT_BUILDER, help="MODULE:FUNCTION(spec, *, seed, dtype, device)")
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
    if Path(name_or_path).is_file():
        return Schedule.from_json(Path(name_or_path).read_text())
    return make_schedule(graph, name_or_path, num_devices=world_size)


def run_from_environment(args: argparse.Namespace) -> dict | None:
    """Join the group torchrun describes, run this rank, return the result on rank 0 (None elsewhere)."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = _spec(args)
    graph = graph_for_tokens(spec, args.seq_len)
    schedule = load_schedule(args.schedule, graph, world_size)
    plan = build_plans(schedule, graph, world_size, spec.dependency_rule == "global_memory")[rank]
    builder = load_builder(args.builder)
    inputs = random_token_ids(spec, args.seq_len, args.seed, batch_size=args.batch)  # as rmtsched run draws them
    factory = functools.partial(builder, spec, seed=args.seed, dtype=DTYPES[args.dtype])
    job = RankJob(factory, inputs if plan.runs_first_layer else None, args.batch, plan, args.repeat)
    backend = "nccl" if args.device == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=args.timeout))
    try:
        report = run_job(job, rank_device(args.device, local_rank))
        reports = [None] * world_size if rank == 0 else None
        dist.gather_object(report, reports, dst=0)
    finally:
        dist.destroy_process_group()
    if rank != 0:
        return None
    result = summarise(reports, schedule, graph, batch_size=args.batch, backend=backend, device=args.device,
                       keep_outputs=False)  # fmt: skip
    return {
        "model": spec.name, "family": spec.family, "layers": spec.num_layers, "seq_len": args.seq_len,
        "segment_len": spec.segment_len, "dtype": args.dtype, "processes": world_size,
        "threads_per_process": torch.get_num_threads(), **result.to_dict(),
    }  # fmt: skip


def _spec(args: argparse.Namespace) -> ModelSpec:
    return load_model_spec(args.model).replace(**run_config(args).spec_overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run_from_environment(args)
    except StepFailure as exc:
        print(f"rmtsched worker: {exc}", file=sys.stderr)
        return 1
    except RmtschedError as exc:
        print(f"rmtsched worker: rank {os.environ.get('RANK', '?')}: error: {exc}", file=sys.stderr)
        return 2
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
    sys.exit(main())
