"""``rmtsched run``: execute a schedule of a real (seeded or checkpointed) model and time it.

Prints the median wall time of R runs, tokens/s, the FLOP/s achieved (the cost model's FLOPs of the run
over that time), peak memory, where the weights and the input came from, and ``output_sha256``, the sha256
of the final hidden states' bytes hashed in segment order (equal hashes = bit-identical outputs; why they
are equal across schedules and thread counts: docs/exactness.md). ``--schedule full-attention`` runs the
baseline instead: the same LLaMA without memory on all N tokens. ``--save-outputs`` writes the logits and
hidden states; ``--trace`` a Chrome/Perfetto trace of the steps, named as the simulator names them.
``--devices P`` (P > 1, e.g. ``pipelined``) starts P local processes, one per device; ``--in-process``
runs such a schedule here instead. A thin shell over ``rmtsched.api.run``, which returns the record
printed here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rmtsched.cli.args import add_run_arguments, positive_int, positive_seconds, run_config
from rmtsched.cli.output import show_progress, to_json
from rmtsched.cli.provenance import provenance_lines
from rmtsched.sched import available_schedulers
from rmtsched.sim.study import FULL_ATTENTION
from rmtsched.specs.run import FULL_ATTENTION_CHUNK_TOKENS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="execute a schedule of a real model; time it and hash its output")
    add_run_arguments(parser)
    parser.add_argument("--schedule", required=True,
                        help=f"one of {available_schedulers()}, or {FULL_ATTENTION!r}: the baseline, the same LLaMA "
                             "weights without memory on all N tokens (a chunked prefill; not a DAG schedule)")
    parser.add_argument("--chunk-tokens", type=positive_int, default=None,
                        help=f"tokens per prefill chunk of {FULL_ATTENTION!r} (default "
                             f"{FULL_ATTENTION_CHUNK_TOKENS}: as fast as one pass, activations far below the KV cache)")
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
    parser.add_argument("--save-outputs", type=Path, default=None, metavar="FILE.safetensors",
                        help="write logits [B, N, vocab] and hidden [B, N, d] (final-normed, memory positions "
                             "dropped) here, atomically; the path is checked before the run")
    parser.add_argument("--trace", type=Path, default=None, metavar="FILE.json",
                        help="write a Chrome/Perfetto trace of one more, untimed run (each step's start and end, its "
                             "cells and width; a device sync per step on CUDA), named as simulate --trace names "
                             "the same schedule's steps; the path is checked before the run")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="on --device cuda: capture each step shape once as a CUDA graph and replay it "
                             "(outputs bit-identical to eager; docs/cuda.md)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rmtsched import api  # torch is imported only when a command runs

    record = api.run(
        run_config(args), schedule=args.schedule, max_width=args.max_width, devices=args.devices,
        in_process=args.in_process, threads_per_process=args.threads_per_process, timeout_s=args.timeout,
        repeat=args.repeat, warmup=args.warmup, save_outputs_to=args.save_outputs, trace=args.trace,
        chunk_tokens=args.chunk_tokens, cuda_graphs=args.cuda_graphs, progress=show_progress(args), force=args.force,
    )  # fmt: skip
    print(to_json(record) if args.json else _text(record))
    if record.get("nonfinite_outputs"):
        print(f"rmtsched run: error: the outputs hold {record['nonfinite_outputs']} NaN/inf value(s): the model "
              "(weights or spec values) produces non-finite numbers", file=sys.stderr)
        return 1
    return 0


def _text(record: dict[str, Any]) -> str:
    processes = record["processes"]
    where = (
        f"{processes} processes ({record['backend']}, {record['threads_per_process']} intra-op thread(s) each)"
        if processes > 1
        else f"1 process ({record['threads_per_process']} intra-op thread(s))"
    )
    peak = f"peak memory {record['peak_memory_bytes'] / 2**20:.1f} MiB ({record['peak_memory_kind']}"
    peak += ", max over ranks)" if processes > 1 else ")"
    if record["schedule"] == FULL_ATTENTION:
        what = (f"{record['seq_len']} tokens with full attention (no memory) in {record['chunks']} chunk(s) of "
                f"{record['chunk_tokens']}")
    else:
        what = (f"{record['seq_len']} tokens in {record['segments']} segments, {record['schedule']} schedule of "
                f"{record['steps']} steps")
    lines = [
        f"{record['model']} ({record['family']}, {record['layers']} layers) on {record['device']}/{record['dtype']}: "
        f"{what} on {where}",
        f"wall {record['wall_s']:.4f} s (median of {record['repeat']}), {record['tokens_per_s']:.1f} tokens/s, "
        f"{record['achieved_flops_per_s'] / 1e9:.2f} GFLOP/s achieved ({record['flops'] / 1e9:.3g} GFLOP), {peak}",
        *provenance_lines(record),
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
    if record.get("saved_outputs"):
        lines.append(f"saved logits and hidden states to {record['saved_outputs']}")
    if record.get("trace"):
        lines.append(f"wrote the trace of one more run to {record['trace']}")
    lines.append(f"output_sha256 {record['output_sha256']}")
    return "\n".join(lines)

