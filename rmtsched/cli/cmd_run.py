"""``rmtsched run``: execute a schedule of a real (seeded or checkpointed) model and time it.

Prints the median wall time of R runs, tokens/s, peak memory and ``output_sha256``, the sha256 of the
final hidden states' bytes hashed in segment order (equal hashes = bit-identical outputs).

``--devices 1`` runs in this process. ``--devices P`` (P > 1, a schedule that places cells on P devices,
e.g. ``pipelined``) starts P local processes, one per device (gloo on CPU, NCCL on P GPUs with ``--device
cuda``), through ``rmtsched.backends.distributed.run_pipelined``: the record then also holds ``processes``,
``threads_per_process``, the bubble and each rank's layers and busy time. ``--in-process`` runs such a
schedule's steps in this one process instead (a check of the schedule, no launching). Outputs are bit-exact
either way, whatever the thread counts: ``RowMatmul`` runs the few GEMM layouts whose bits depend on the
thread count with one thread (see rowmm.py).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rmtsched.backends.torch import execute
from rmtsched.backends.torch.models import build_model
from rmtsched.backends.torch.rowmm import MODES
from rmtsched.backends.torch.session import (
    OutputHash,
    load_model,
    peak_memory,
    random_token_ids,
    resolve_device,
    warm_up,
)
from rmtsched.backends.torch.threads import intra_op_threads
from rmtsched.cli.args import non_negative_int, positive_int
from rmtsched.errors import RmtschedError
from rmtsched.sched import CellGraph, Schedule, available_schedulers, graph_for_tokens, make_schedule
from rmtsched.specs.guard import check_fits, run_estimate
from rmtsched.specs.model import ModelSpec, available_model_specs, load_model_spec


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model/input options ``run`` and ``verify`` share."""
    parser.add_argument("--model", required=True, help=f"a JSON model spec file or one of {available_model_specs()}")
    parser.add_argument("--checkpoint", type=Path, default=None, help="load weights from this checkpoint directory")
    parser.add_argument("--seq-len", type=positive_int, required=True, help="tokens in the input sequence N")
    parser.add_argument("--segment-len", type=positive_int, default=None, help="tokens per segment T")
    parser.add_argument("--mem-tokens", type=non_negative_int, default=None, help="memory tokens M")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="fp32", help="fp32 or fp64 on cpu; fp32, bf16 or fp16 on cuda")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the weights and the input tokens")
    parser.add_argument("--gemm", choices=MODES, default="auto", help="row-GEMM mode (see rowmm.py)")


def model_spec(args: argparse.Namespace) -> ModelSpec:
    spec = load_model_spec(args.model)
    changes = {"segment_len": args.segment_len, "mem_tokens": args.mem_tokens}
    return spec.replace(**{name: value for name, value in changes.items() if value is not None})


def positive_seconds(text: str) -> float:
    """A finite number of seconds > 0 (the multi-process run's no-progress timeout)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive, finite number of seconds, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="execute a schedule of a real model; time it and hash its output")
    add_model_arguments(parser)
    parser.add_argument("--schedule", required=True, help=f"one of {available_schedulers()}")
    parser.add_argument("--devices", type=positive_int, default=1,
                        help="devices P; P > 1 (e.g. --schedule pipelined) starts P local processes, one per device "
                             "(gloo on cpu, NCCL on P GPUs with --device cuda); 1 runs in this process")
    parser.add_argument("--in-process", action="store_true",
                        help="run a multi-device schedule's steps in this one process instead of starting P")
    parser.add_argument("--threads-per-process", type=positive_int, default=None,
                        help="intra-op threads of each process (default: this process's threads, split evenly "
                             "over the P processes); outputs do not depend on it")
    parser.add_argument("--timeout", type=positive_seconds, default=30.0,
                        help="seconds a multi-process run may go without any rank making progress before every "
                             "rank is ended and the run fails naming the rank and step (default 30)")
    parser.add_argument("--max-width", type=positive_int, default=None, help="cap on cells per step")
    parser.add_argument("--repeat", type=positive_int, default=1, help="runs R; the median wall time is reported")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the untimed warm-up on a short prefix (one-time GEMM probes, allocator)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    spec = model_spec(args)
    check_fits(run_estimate(spec, args.seq_len, args.dtype, runs=args.repeat + args.warmup), force=args.force)
    device, dtype = resolve_device(args.device, args.dtype)
    graph = graph_for_tokens(spec, args.seq_len)
    # Built here in both modes, so a schedule that does not fit (P > layers, ...) fails before anything starts.
    schedule = make_schedule(graph, args.schedule, max_width=args.max_width, num_devices=args.devices)
    record: dict[str, Any] = {
        "model": spec.name, "family": spec.family, "layers": spec.num_layers, "seq_len": args.seq_len,
        "segment_len": spec.segment_len, "dtype": args.dtype,
    }  # fmt: skip
    if args.devices > 1 and not args.in_process:
        record.update(_run_processes(args, spec, device, dtype))
    else:
        record.update(_run_here(args, spec, device, dtype, graph, schedule))
    print(json.dumps(record) if args.json else _text(record))
    return 0


def _run_here(
    args: argparse.Namespace, spec: ModelSpec, device: torch.device, dtype: torch.dtype, graph: CellGraph,
    schedule: Schedule,
) -> dict[str, Any]:
    """Every step in this process (``--devices 1`` or ``--in-process``)."""
    model = load_model(spec, checkpoint=args.checkpoint, seed=args.seed, dtype=dtype, device=device, matmul=args.gemm)
    inputs = random_token_ids(spec, args.seq_len, args.seed)
    walls, hashes = [], []
    with intra_op_threads(args.threads_per_process) as threads:
        if args.warmup:
            warm_up(model, schedule, args.seq_len)
        for repeat in range(args.repeat):
            digest = OutputHash()
            with tqdm(total=graph.num_segments, desc=f"run {repeat + 1}/{args.repeat}", unit="seg", file=sys.stderr,
                      delay=2.0, leave=False) as bar:

                def on_output(segment, output, digest=digest, bar=bar):
                    digest(segment, output)
                    bar.update(1)

                result = execute(model, inputs, schedule, on_segment_output=on_output, collect_outputs=False)
            walls.append(result.stats.wall_s)
            hashes.append(digest.hexdigest())
    if len(set(hashes)) != 1:
        raise RmtschedError(f"repeated runs gave different outputs (hashes {sorted(set(hashes))})")
    wall = statistics.median(walls)
    peak_bytes, peak_kind = peak_memory(device)
    return {
        "segments": graph.num_segments, "schedule": schedule.scheduler, "steps": schedule.num_steps,
        "devices": schedule.num_devices, "processes": 1, "threads_per_process": threads, "device": device.type,
        "repeat": args.repeat, "wall_s": wall, "wall_s_all": walls, "tokens_per_s": args.seq_len / wall,
        "peak_memory_bytes": peak_bytes, "peak_memory_kind": peak_kind, "output_sha256": hashes[0],
    }  # fmt: skip


def _run_processes(
    args: argparse.Namespace, spec: ModelSpec, device: torch.device, dtype: torch.dtype
) -> dict[str, Any]:
    """One local process per device through the distributed launcher; its errors name the rank and step."""
    from rmtsched.backends.distributed import DistributedError, run_pipelined  # optional layer: only when asked

    if args.checkpoint is None:  # each rank draws only its own layers' weights (the full model's, same seed)
        factory = partial(build_model, spec, seed=args.seed, dtype=dtype, matmul=args.gemm)
    else:
        factory = partial(load_model, spec, checkpoint=args.checkpoint, seed=args.seed, dtype=dtype, matmul=args.gemm)
    threads = args.threads_per_process or max(1, torch.get_num_threads() // args.devices)
    inputs = random_token_ids(spec, args.seq_len, args.seed)
    try:
        result = run_pipelined(
            factory, inputs, num_procs=args.devices, layout=spec, schedule=args.schedule, max_width=args.max_width,
            device=device.type, threads_per_proc=threads, timeout_s=args.timeout, repeat=args.repeat,
            warmup=args.warmup,
        )  # fmt: skip
    except DistributedError as exc:
        message = " ".join(str(exc).split())  # one line on stderr, whatever the rank's exception said
        if message == str(exc):
            raise
        raise DistributedError(message, kind=exc.kind, rank=exc.rank, step=exc.step,
                               remote_traceback=exc.remote_traceback) from exc
    from rmtsched.cli.records import pipeline_record

    record = pipeline_record(result)
    record["threads_per_process"] = threads
    return record


def _text(record: dict[str, Any]) -> str:
    processes = record["processes"]
    where = (
        f"{processes} processes ({record['backend']}, {record['threads_per_process']} intra-op thread(s) each)"
        if processes > 1
        else f"1 process ({record['threads_per_process']} intra-op thread(s))"
    )
    peak = f"peak memory {record['peak_memory_bytes'] / 2**20:.1f} MiB ({record['peak_memory_kind']}"
    peak += ", max over ranks)" if processes > 1 else ")"
    lines = [
        f"{record['model']} ({record['family']}, {record['layers']} layers) on {record['device']}/{record['dtype']}: "
        f"{record['seq_len']} tokens in {record['segments']} segments, {record['schedule']} schedule of "
        f"{record['steps']} steps on {where}",
        f"wall {record['wall_s']:.4f} s (median of {record['repeat']}), {record['tokens_per_s']:.1f} tokens/s, {peak}",
    ]
    if processes > 1:
        lines.append(
            f"bubble {record['bubble_fraction']:.1%} of rank time (ideal for equal stages "
            f"{record['ideal_bubble_fraction']:.1%})"
        )
        lines += [
            f"  rank {rank['rank']}: layers {rank['layers'][0]}..{rank['layers'][1] - 1}, busy {rank['busy_s']:.4f} s, "
            f"waiting {rank['wait_s']:.4f} s, wall {rank['wall_s']:.4f} s"
            for rank in record["ranks"]
        ]
    lines.append(f"output_sha256 {record['output_sha256']}")
    return "\n".join(lines)
