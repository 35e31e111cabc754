"""``rmtsched verify``: run every registered schedule of a model and compare it with the sequential run.

Reports, per schedule, ``max_abs_diff`` over segment outputs and final memory state and ``bitwise_equal``;
exits 1 if any schedule differs by more than the tolerance (0 on CPU: the exactness contract).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from tqdm import tqdm

from rmtsched.backends.torch import execute
from rmtsched.backends.torch.session import (
    default_tolerance,
    load_model,
    random_token_ids,
    resolve_device,
    verification_schedules,
)
from rmtsched.cli.cmd_run import add_model_arguments, model_spec
from rmtsched.sched import graph_for_tokens
from rmtsched.specs.guard import check_fits, run_estimate


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("verify", help="check every schedule of a model against the sequential run")
    add_model_arguments(parser)
    parser.add_argument("--tolerance", type=float, default=None, help="max |diff| allowed (default: 0 on cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def _max_diff(reference: list[torch.Tensor], other: list[torch.Tensor]) -> tuple[float, bool]:
    diff, equal = 0.0, True
    for a, b in zip(reference, other, strict=True):
        equal = equal and torch.equal(a, b)
        diff = max(diff, (a.double() - b.double()).abs().max().item() if a.numel() else 0.0)
    return diff, equal


def _comparable(result) -> list[torch.Tensor]:
    return [*result.outputs, *(result.final_state[name] for name in sorted(result.final_state)), result.last_hidden]


def run(args: argparse.Namespace) -> int:
    spec = model_spec(args)
    check_fits(run_estimate(spec, args.seq_len, args.dtype, runs=6, kept_outputs=2, verb="verifying"), force=args.force)
    device, dtype = resolve_device(args.device, args.dtype)
    tolerance = default_tolerance(device, dtype) if args.tolerance is None else args.tolerance
    graph = graph_for_tokens(spec, args.seq_len)
    model = load_model(spec, checkpoint=args.checkpoint, seed=args.seed, dtype=dtype, device=device, matmul=args.gemm)
    inputs = random_token_ids(spec, args.seq_len, args.seed)
    schedules = verification_schedules(graph)
    reference = _comparable(execute(model, inputs, schedules.pop("sequential")))
    rows = []
    for name, schedule in tqdm(schedules.items(), desc="verify", unit="schedule", file=sys.stderr, delay=2.0,
                               leave=False):
        result = execute(model, inputs, schedule)
        diff, equal = _max_diff(reference, _comparable(result))
        rows.append({"schedule": name, "steps": schedule.num_steps, "max_width": schedule.max_width,
                     "max_abs_diff": diff, "bitwise_equal": equal, "within_tolerance": diff <= tolerance,
                     "wall_s": result.stats.wall_s})
    ok = all(row["within_tolerance"] for row in rows)
    if args.json:
        print(json.dumps({"model": spec.name, "seq_len": args.seq_len, "device": device.type, "dtype": args.dtype,
                          "tolerance": tolerance, "ok": ok, "schedules": rows}))
    else:
        print(f"{spec.name} on {device.type}/{args.dtype}, {args.seq_len} tokens, {graph.num_segments} segments; "
              f"each schedule vs sequential (tolerance {tolerance:g}):")
        print(f"{'schedule':<16} {'steps':>7} {'width':>5} {'max_abs_diff':>13} {'bitwise':>8}")
        for row in rows:
            print(f"{row['schedule']:<16} {row['steps']:>7} {row['max_width']:>5} {row['max_abs_diff']:>13.3e} "
                  f"{'yes' if row['bitwise_equal'] else 'NO':>8}")
        print("OK: every schedule within tolerance" if ok else "FAILED: some schedule differs beyond tolerance")
    return 0 if ok else 1
