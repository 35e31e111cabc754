"""``rmtsched train-step``: optimizer steps of a seeded model on toy associative recall, under a training schedule.

Each step runs the chosen training schedule (forward, recompute and backward cells), whose gradients equal
plain BPTT through the sequential forward bit for bit, then an Adam step; the loss of every step is printed.
``--devices P`` runs a P-device schedule ('pipelined') on P local processes, gradients still exact.
A thin shell over ``rmtsched.backends.torch.recall_task`` (and ``rmtsched.backends.distributed``'s
``train_step_pipelined``); torch is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

from rmtsched.cli.args import non_negative_float, non_negative_int, positive_int, positive_seconds
from rmtsched.cli.output import to_json
from rmtsched.sched import available_train_schedulers
from rmtsched.specs.model import available_model_specs, load_model_spec


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-step", help="train a seeded model on toy associative recall under a "
                                                      "training schedule (exact BPTT gradients)")
    parser.add_argument("--model", default="armt-tiny", help=f"a JSON model spec file or one of "
                                                             f"{available_model_specs()} (default armt-tiny)")
    parser.add_argument("--segment-len", type=positive_int, default=4, help="tokens per segment T (default 4)")
    parser.add_argument("--vocab-size", type=positive_int, default=32, help="vocabulary of the task (default 32)")
    parser.add_argument("--schedule", default="diagonal",
                        help=f"one of {available_train_schedulers()} (default diagonal)")
    parser.add_argument("--truncate", type=positive_int, default=None, metavar="K",
                        help="BPTT over the last K segments")
    parser.add_argument("--max-width", type=positive_int, default=None, help="cap on cells per step")
    parser.add_argument("--memory-budget", type=positive_int, default=None, metavar="CELLS",
                        help="most cells' activations held at once ('checkpointed')")
    parser.add_argument("--devices", type=positive_int, default=1, metavar="P",
                        help="run the schedule's P devices as P local processes (gloo; needs a multi-device "
                             "schedule such as pipelined; default 1: this process)")
    parser.add_argument("--threads-per-process", type=positive_int, default=None,
                        help="intra-op threads of each process (default: this process's threads, split evenly over "
                             "the P processes); the gradients' bits do not depend on it")
    parser.add_argument("--timeout", type=positive_seconds, default=60.0,
                        help="seconds a multi-process step may go without any rank making progress before every "
                             "rank is ended and the run fails naming the rank and step (default 60)")
    parser.add_argument("--steps", type=positive_int, default=10, help="optimizer steps (default 10)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="sequences per step (default 8)")
    parser.add_argument("--pairs", type=positive_int, default=4, help="key-value pairs per sequence (default 4)")
    parser.add_argument("--lr", type=non_negative_float, default=3e-3, help="Adam learning rate (default 3e-3)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of weights and batches (default 0)")
    parser.add_argument("--dtype", choices=("fp32", "fp64"), default="fp32")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rmtsched.backends.distributed import train_step_pipelined  # torch is imported only when the command runs
    from rmtsched.backends.torch import build_model
    from rmtsched.backends.torch.models import parse_dtype
    from rmtsched.backends.torch.recall_task import train_recall
    from rmtsched.backends.torch.threads import intra_op_threads
    from rmtsched.backends.torch.train_executor import train_step

    spec = load_model_spec(args.model).replace(segment_len=args.segment_len, vocab_size=args.vocab_size)
    model = build_model(spec, seed=args.seed, dtype=parse_dtype(args.dtype))
    step = train_step
    if args.devices > 1:
        step = functools.partial(train_step_pipelined, threads_per_proc=args.threads_per_process,
                                 timeout_s=args.timeout)
    with intra_op_threads(args.threads_per_process if args.devices == 1 else None):
        results = train_recall(model, args.schedule, steps=args.steps, batch_size=args.batch_size,
                               num_pairs=args.pairs, lr=args.lr, seed=args.seed, truncation=args.truncate,
                               max_width=args.max_width, memory_budget=args.memory_budget, num_devices=args.devices,
                               optimizer_step=step)
    record: dict[str, Any] = {
        "model": spec.name, "family": spec.family, "schedule": args.schedule, "segment_len": spec.segment_len,
        "tokens": 2 * args.pairs + 1, "truncation": args.truncate, "memory_budget": args.memory_budget,
        "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "devices": args.devices,
        "losses": [float(result.loss) for result in results],
        "step_wall_s": [result.stats.wall_s for result in results],
        "recomputed_cells": results[0].stats.recomputed_cells,
        "peak_held_graphs": results[0].stats.peak_held_graphs,
    }
    if args.json:
        print(to_json(record))
        return 0
    for index, (loss, wall) in enumerate(zip(record["losses"], record["step_wall_s"], strict=True)):
        print(f"step {index:>4}: loss {loss:.4f}  ({wall:.3f} s)")
    where = f" on {args.devices} processes" if args.devices > 1 else ""
    print(f"{spec.name} ({spec.family}), {args.schedule}{where}: loss {record['losses'][0]:.4f} -> "
          f"{record['losses'][-1]:.4f} over {args.steps} steps; {record['recomputed_cells']} cells recomputed, at most "
          f"{record['peak_held_graphs']} cell graphs held")
    return 0

