"""``rmtsched verify``: run every registered schedule of a model and compare it with the sequential run.

Reports, per schedule, ``max_abs_diff`` over segment outputs and final memory state, ``bitwise_equal``
and the count of NaN/inf values; exits 1 if any schedule differs by more than the tolerance (0 on CPU:
the exactness contract) or any output holds NaN/inf. A thin shell over ``rmtsched.api.verify``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rmtsched.cli.args import add_run_arguments, non_negative_float, run_config
from rmtsched.cli.output import show_progress, to_json
from rmtsched.cli.provenance import provenance_lines


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("verify", help="check every schedule of a model against the sequential run")
    add_run_arguments(parser)
    parser.add_argument("--tolerance", type=non_negative_float, default=None,
                        help="max |diff| allowed (default: 0 on cpu)")
    parser.add_argument("--save-outputs", type=Path, default=None, metavar="FILE.safetensors",
                        help="write the sequential run's logits [B, N, vocab] and hidden [B, N, d] here, atomically")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rmtsched import api  # torch is imported only when a command runs

    report = api.verify(run_config(args), tolerance=args.tolerance, save_outputs_to=args.save_outputs,
                        progress=show_progress(args), force=args.force)
    print(to_json(report) if args.json else _text(report))
    return 0 if report["ok"] else 1


def _text(report: dict[str, Any]) -> str:
    rows = report["schedules"]
    lines = [
        f"{report['model']} on {report['device']}/{report['dtype']}, {report['seq_len']} tokens; each schedule vs "
        f"sequential (tolerance {report['tolerance']:g}):",
        *provenance_lines(report),
        f"{'schedule':<16} {'steps':>7} {'width':>5} {'max_abs_diff':>13} {'bitwise':>8} {'nan/inf':>8}",
    ]
    for row in rows:
        diff = "non-finite" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.3e}"
        lines.append(f"{row['schedule']:<16} {row['steps']:>7} {row['max_width']:>5} {diff:>13} "
                     f"{'yes' if row['bitwise_equal'] else 'NO':>8} {row['nonfinite']:>8}")
    broken = ["sequential"] * bool(report["reference_nonfinite"])
    broken += [row["schedule"] for row in rows if row["nonfinite"]]
    if report["saved_outputs"]:
        lines.append(f"saved the sequential run's logits and hidden states to {report['saved_outputs']}")
    if broken:
        lines.append(f"FAILED: NaN/inf in the outputs of {', '.join(broken)}: no result can be trusted")
    elif report["ok"]:
        lines.append("OK: every schedule within tolerance")
    else:
        lines.append("FAILED: some schedule differs beyond tolerance")
    return "\n".join(lines)
