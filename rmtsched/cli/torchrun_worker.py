"""Entry point for ``torchrun``: one process per device, on one machine or many.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; every rank builds the same model
from the spec and seed, plans its stage, runs it, and rank 0 prints the JSON that ``rmtsched run`` prints.
Two machines with 4 GPUs each (run the same command on both, ``--node-rank`` 0 and 1)::

    torchrun --nnodes 2 --nproc-per-node 4 --node-rank 0 --master-addr HOST0 --master-port 29500 \\
        -m rmtsched.cli.torchrun_worker --model armt-llama-8b --seq-len 1048576 \\
        --device cuda --dtype bf16 --json

One machine, CPU, two ranks::

    torchrun --standalone --nproc-per-node 2 -m rmtsched.cli.torchrun_worker \\
        --model armt-small --seq-len 4096 --threads 1 --json

Like ``rmtsched run``, bad input (environment, options, spec, schedule) is one line on stderr and exit 2,
checked before joining the group; a failed run (port in use, a peer lost, a step that raised) one line
naming the rank and step, exit 3; never a traceback. torchrun then ends the other ranks; ranks blocked on
a dead peer give up after ``--timeout`` seconds, and every rank ends with torchrun's agent if it is killed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rmtsched.api import pipeline_record
from rmtsched.backends.distributed.lifeline import exit_with
from rmtsched.backends.distributed.worker import DEFAULT_BUILDER, run_from_environment
from rmtsched.cli.main import OneLineErrorParser
from rmtsched.cli.output import to_json
from rmtsched.errors import RmtschedError, RunFailure
from rmtsched.specs.run_options import add_run_arguments


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="python -m rmtsched.cli.torchrun_worker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, checkpoint=False, inputs=False)  # --model, --seq-len, ..., --seed: one RunConfig
    parser.add_argument("--schedule", default="pipelined", help="'pipelined' or a schedule JSON file")
    parser.add_argument("--builder", default=DEFAULT_BUILDER, help="MODULE:FUNCTION(spec, *, seed, dtype, device)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads per rank (CPU)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a rank may wait on a peer")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (rank 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one rank; exit 0, or one line on stderr and 2 (bad input) or 3 (the run failed)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a malformed option (one line already printed)
        return int(exc.code or 0)
    try:
        outcome = run_from_environment(args)
    except (RmtschedError, RunFailure) as exc:
        message = " ".join(str(exc).split())
        who = "" if getattr(exc, "rank", None) is not None else f"rank {os.environ.get('RANK', '?')}: "
        print(f"rmtsched worker: {who}error: {message}", file=sys.stderr)
        return 2 if isinstance(exc, RmtschedError) else 3
    if outcome is not None:
        record = {**outcome.context, **pipeline_record(outcome.result)}
        print(to_json(record) if args.json else _table(record))
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
