"""``rmtsched generate``: greedy generation from a checkpoint (or seeded weights) after a prompt.

The prompt's full segments go through the memory with ``--schedule`` (every schedule gives the same
tokens); the last segment and the new tokens are decoded with a KV cache (``backends/torch/generate.py``).
Prints the new token ids, and their text when the checkpoint directory holds a ``tokenizer.json``;
``--json`` prints the record with the timings (prefill, per-token decode). A thin shell over
``rmtsched.api.generate``; torch is imported only when the command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from rmtsched.cli.args import add_run_arguments, non_negative_int, positive_int, run_config
from rmtsched.cli.output import to_json
from rmtsched.sched import available_schedulers


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="greedy generation after a prompt (memory, then a KV cache)")
    add_run_arguments(parser)
    parser.add_argument("--max-new-tokens", type=positive_int, default=32, help="tokens to generate K (default 32)")
    parser.add_argument("--schedule", default="diagonal", help=f"schedule of the prompt's memory, one of "
                                                               f"{available_schedulers()} (default diagonal)")
    parser.add_argument("--eos-token-id", type=non_negative_int, default=None,
                        help="stop once every sequence has produced this id")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the untimed 2-token warm-up (one-time GEMM probes, allocator)")
    parser.add_argument("--json", action="store_true", help="print one JSON object, with timings")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rmtsched import api  # torch is imported only when a command runs

    record = api.generate(run_config(args), max_new_tokens=args.max_new_tokens, schedule=args.schedule,
                          eos_token_id=args.eos_token_id, warmup=args.warmup, force=args.force)
    print(to_json(record) if args.json else _text(record))
    return 0


def _text(record: dict[str, Any]) -> str:
    """One line of ids per sequence (``tokens[i]:`` when there are several), then one of text each."""
    rows, texts = record["new_tokens"], record.get("text", [])
    index = (lambda i: "") if len(rows) == 1 else (lambda i: f"[{i}]")
    lines = [f"tokens{index(i)}: {' '.join(map(str, row))}" for i, row in enumerate(rows)]
    return "\n".join(lines + [f"text{index(i)}: {text}" for i, text in enumerate(texts)])
