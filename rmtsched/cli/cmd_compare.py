"""``rmtsched compare``: every schedule and the full-attention baseline on the real backend and in the
simulator, side by side: makespans, speedups over sequential and over full attention, and per step width
the predicted against the measured step times (``--trace-dir`` writes both traces of each schedule).

torch and the backend are imported inside the handler, so ``rmtsched --help`` stays instant.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rmtsched.cli.args import add_run_arguments, positive_int, run_config
from rmtsched.cli.output import show_progress, to_json
from rmtsched.sched import available_schedulers
from rmtsched.sim.study import FULL_ATTENTION
from rmtsched.specs.guard import check_fits, full_attention_estimate, run_estimate
from rmtsched.specs.hardware import available_hardware_specs, load_hardware_spec
from rmtsched.specs.model import load_model_spec
from rmtsched.specs.run import FULL_ATTENTION_CHUNK_TOKENS

if TYPE_CHECKING:
    from rmtsched.calibrate.compare import Comparison
    from rmtsched.calibrate.pipeline import PipelineComparison


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="run every schedule on the backend and in the simulator: predicted vs measured time"
    )
    add_run_arguments(parser, checkpoint=False, inputs=False, dtype_default=None)
    parser.add_argument(
        "--hardware", required=True,
        help=f"a JSON hardware spec (from calibrate) or one of {available_hardware_specs()}",
    )
    parser.add_argument("--schedule", action="append", default=None,
                        help=f"a scheduler to compare, or {FULL_ATTENTION!r} (the baseline: the same LLaMA without "
                             "memory on all N tokens); repeatable; default: every registered one and the baseline")
    parser.add_argument("--chunk-tokens", type=positive_int, default=None,
                        help=f"tokens per prefill chunk of {FULL_ATTENTION!r} (default {FULL_ATTENTION_CHUNK_TOKENS})")
    parser.add_argument("--trace-dir", type=Path, default=None, metavar="DIR",
                        help="write DIR/<schedule>.measured.json and DIR/<schedule>.simulated.json, Chrome/Perfetto "
                             "traces of one more run of each schedule and of its simulation, with the same names "
                             "(DIR is created if missing; every path is checked before the runs)")
    parser.add_argument("--max-width", type=positive_int, default=None, help="cap on cells per step")
    parser.add_argument("--devices", type=positive_int, default=1,
                        help="also run the pipelined schedule on this many processes (distributed backend) "
                             "and compare makespan and per-rank busy time")
    parser.add_argument("--repeat", type=positive_int, default=3, help="timed runs per schedule (median)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads")
    parser.add_argument("--json", action="store_true", help="print one JSON record per schedule (a list)")
    parser.add_argument("--clock", default="wall",
                        help="wall (default) or process: CPU time, for --threads 1 on a machine others share")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rmtsched.calibrate.compare import compare
    from rmtsched.calibrate.device import resolve_target
    from rmtsched.calibrate.pipeline import check_pipeline_devices, compare_pipelined

    config = run_config(args)
    target = resolve_target(config.device, config.dtype, args.threads)
    spec = load_model_spec(config.model).replace(**config.spec_overrides)
    names = args.schedule or [*available_schedulers(), FULL_ATTENTION]
    schedulers = len([name for name in names if name != FULL_ATTENTION]) + (args.devices > 1)
    runs = args.repeat + 2  # the warm-up, the timed runs and the step-by-step one
    check_fits(run_estimate(spec, config.seq_len, target.dtype_name, runs=runs * schedulers, verb="comparing"),
               force=args.force)
    if FULL_ATTENTION in names:
        check_fits(full_attention_estimate(spec, config.seq_len, target.dtype_name, args.chunk_tokens, runs=runs,
                                           verb="comparing"), force=args.force)
    hardware = load_hardware_spec(args.hardware)
    if args.devices > 1:
        check_pipeline_devices(hardware, args.devices)  # before the single-device runs, not after
    result = compare(
        spec, hardware, config.seq_len, target, schedules=args.schedule, repeat=args.repeat,
        max_width=args.max_width, seed=config.seed, progress=show_progress(args), clock_name=args.clock,
        matmul=config.gemm, full_attention_baseline=args.schedule is None, chunk_tokens=args.chunk_tokens,
        trace_dir=args.trace_dir,
    )
    pipeline = None
    if args.devices > 1:
        pipeline = compare_pipelined(spec, hardware, config.seq_len, target, args.devices, repeat=args.repeat,
                                     seed=config.seed)
    if args.json:
        print(to_json(result.records() + ([pipeline.record()] if pipeline else [])))
    else:
        print(format_comparison(result))
        if pipeline is not None:
            print(format_pipeline(pipeline))
    return 0


def format_pipeline(result: PipelineComparison) -> str:
    """The multi-process pipelined run: makespan, then each rank's busy time."""
    lines = [
        f"pipelined on {result.devices} processes ({result.threads_per_device} threads each): predicted "
        f"{_time(result.predicted_s)}, measured {_time(result.measured_s)} ({100 * result.rel_error:+.1f}%)"
    ]
    for rank in result.ranks:
        lines.append(
            f"  rank {rank.rank} layers {rank.layers[0]}..{rank.layers[1] - 1}: busy predicted "
            f"{_time(rank.predicted_busy_s)}, measured {_time(rank.measured_busy_s)} ({100 * rank.rel_error:+.1f}%)"
        )
    return "\n".join(lines)


def _time(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds >= 1 else f"{seconds * 1e3:.1f} ms"


def format_comparison(result: Comparison) -> str:
    """A header, one row per schedule and the baseline, the speedup lines, the median error, and the
    per-step errors by step width."""
    from rmtsched.calibrate.compare import BASELINE

    spec, graph, target = result.spec, result.graph, result.target
    header = (
        f"{spec.name} on {target.device.type} ({target.dtype_name}, {target.threads} threads): {result.seq_len:,} "
        f"tokens = {graph.num_segments:,} segments x {graph.num_layers} layers; hardware {result.hardware.name}; "
        f"measured = median of {len(result.rows[0].measured_runs_s)} runs"
    )
    columns = ["schedule", "steps", "predicted", "measured", "error", "speedup pred", "speedup meas"]
    rows = []
    for row in result.rows:
        predicted, measured = result.speedups(row)
        rows.append([
            row.schedule, f"{row.steps:,}", _time(row.predicted_s), _time(row.measured_s),
            f"{100 * row.rel_error:+.1f}%",
            f"{predicted:.2f}x" if predicted else "-", f"{measured:.2f}x" if measured else "-",
        ])
    widths = [max(len(col), *(len(r[i]) for r in rows)) for i, col in enumerate(columns)]
    lines = [header, "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    diagonal = result.row("diagonal")
    for baseline, label in ((BASELINE, "sequential"), (FULL_ATTENTION, "full attention")):
        if diagonal is not None and result.row(baseline) is not None:
            predicted, measured = result.speedups(diagonal, baseline)
            lines.append(
                f"diagonal vs {label}: predicted {predicted:.2f}x, measured {measured:.2f}x "
                f"({100 * (predicted / measured - 1):+.1f}%)"
            )
    lines.append(f"median |error| over schedules: {100 * result.median_abs_rel_error:.1f}%")
    lines += _step_lines(result)
    return "\n".join(lines)


def _step_lines(result: Comparison) -> list[str]:
    """Per schedule, each step width: its steps and the median and worst error of one step's time."""
    rows = [row for row in result.rows if row.by_width]
    if not rows:
        return []
    lines = ["per step width, predicted / measured - 1 of one step (median, worst):"]
    for row in rows:
        widths = ", ".join(f"w={w.width} x{w.steps} {100 * w.median_error:+.0f}% ({100 * w.worst_error:+.0f}%)"
                           for w in row.by_width)
        lines.append(f"  {row.schedule}: {widths}")
    if result.trace_dir is not None:
        lines.append(f"traces: {result.trace_dir}/<schedule>.measured.json and .simulated.json (open both in "
                     "ui.perfetto.dev)")
    return lines
