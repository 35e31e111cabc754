"""``rmtsched compare``: every schedule and the full-attention baseline on the real backend and in the
simulator, side by side: makespans, speedups over sequential and over full attention, and per step width
the predicted against the measured step times (``--trace-dir`` writes both traces of each schedule).
With ``--train``, one training step under each training schedule: step time and peak activation memory
(``rmtsched.calibrate.compare_train``).

torch and the backend are imported inside the handler, so ``rmtsched --help`` stays instant.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rmtsched.cli.args import add_run_arguments, positive_int, run_config
from rmtsched.cli.output import show_progress, to_json
from rmtsched.errors import SpecError
from rmtsched.sched import available_schedulers, available_train_schedulers
from rmtsched.sim.report import format_bytes
from rmtsched.sim.study import FULL_ATTENTION
from rmtsched.specs.guard import check_fits, full_attention_estimate, run_estimate
from rmtsched.specs.hardware import available_hardware_specs, load_hardware_spec
from rmtsched.specs.model import load_model_spec
from rmtsched.specs.run import FULL_ATTENTION_CHUNK_TOKENS

if TYPE_CHECKING:
    from rmtsched.calibrate.compare import Comparison
    from rmtsched.calibrate.compare_train import TrainComparison
    from rmtsched.calibrate.device import Target
    from rmtsched.calibrate.pipeline import PipelineComparison
    from rmtsched.specs.model import ModelSpec


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="run every schedule on the backend and in the simulator: predicted vs measured time "
                        "(--train: of a training step, and its peak activation memory)"
    )
    add_run_arguments(parser, checkpoint=False, inputs=False, dtype_default=None)
    parser.add_argument(
        "--hardware", required=True,
        help=f"a JSON hardware spec (from calibrate) or one of {available_hardware_specs()}",
    )
    parser.add_argument("--schedule", action="append", default=None,
                        help=f"a scheduler to compare, or {FULL_ATTENTION!r} (the baseline: the same LLaMA without "
                             "memory on all N tokens); repeatable; default: every registered one and the baseline "
                             "(with --train: training schedulers, every one that runs on one device)")
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
    train = parser.add_argument_group("training (--train)")
    train.add_argument("--train", action="store_true",
                       help="compare one training step (loss and every gradient) under each training scheduler "
                            f"({', '.join(available_train_schedulers())}): time and peak activation memory")
    train.add_argument("--batch-size", type=positive_int, default=None, help="sequences per step (default 1)")
    train.add_argument("--truncate", type=positive_int, default=None, metavar="K", help="BPTT over the last K segments")
    train.add_argument("--memory-budget", type=positive_int, default=None, metavar="CELLS",
                       help="most cells' activations held at once by 'checkpointed' (default 2 x layers)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rmtsched.calibrate.compare import compare
    from rmtsched.calibrate.device import resolve_target
    from rmtsched.calibrate.pipeline import check_pipeline_devices, compare_pipelined

    config = run_config(args)
    target = resolve_target(config.device, config.dtype, args.threads)
    spec = load_model_spec(config.model).replace(**config.spec_overrides)
    if args.train:
        return _run_train(args, spec, target)
    for flag, value in (("--batch-size", args.batch_size), ("--truncate", args.truncate),
                        ("--memory-budget", args.memory_budget)):
        if value is not None:
            raise SpecError(f"{flag} applies to a training step: add --train")
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
    lines = [header, *_table(columns, rows)]
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


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    """The column titles and the rows, each column as wide as its widest cell."""
    widths = [max(len(col), *(len(r[i]) for r in rows)) for i, col in enumerate(columns)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [columns, *rows]]


def _run_train(args: argparse.Namespace, spec: ModelSpec, target: Target) -> int:
    """``--train``: every requested training schedule timed, measured and simulated (forward-only options refused)."""
    from rmtsched.calibrate.compare_train import compare_train, single_device_train_schedulers

    for flag, given in (("--devices", args.devices > 1), ("--chunk-tokens", args.chunk_tokens is not None),
                        ("--trace-dir", args.trace_dir is not None),
                        (f"--schedule {FULL_ATTENTION}", FULL_ATTENTION in (args.schedule or ()))):
        if given:
            raise SpecError(f"{flag} applies to the forward comparison, not to --train")
    schedulers = len(args.schedule or single_device_train_schedulers())
    # A training step is about three forward passes (F, then B at twice F), plus the untimed counting run.
    check_fits(run_estimate(spec, args.seq_len * (args.batch_size or 1), target.dtype_name,
                            runs=3 * (args.repeat + 1) * schedulers, verb="comparing training of"), force=args.force)
    hardware = load_hardware_spec(args.hardware)
    result = compare_train(
        spec, hardware, args.seq_len, target, schedules=args.schedule, batch_size=args.batch_size or 1,
        truncation=args.truncate, memory_budget=args.memory_budget, max_width=args.max_width, repeat=args.repeat,
        seed=args.seed, progress=show_progress(args), clock_name=args.clock, matmul=args.gemm, guard=not args.force,
    )
    print(to_json(result.records()) if args.json else format_train_comparison(result))
    return 0


def format_train_comparison(result: TrainComparison) -> str:
    """A header, then per training schedule: predicted and measured step time, their error, the speedups
    over sequential, and predicted and measured peak activation memory."""
    spec, graph, target = result.spec, result.graph.forward, result.target
    truncation = "" if result.graph.truncation is None else f", BPTT over the last {result.graph.truncation}"
    budget = "" if result.memory_budget is None else f"; checkpointed budget {result.memory_budget} cells"
    header = (
        f"training step of {spec.name} on {target.device.type} ({target.dtype_name}, {target.threads} threads): "
        f"batch {result.batch_size} x {result.seq_len:,} tokens = {graph.num_segments:,} segments x "
        f"{graph.num_layers} layers{truncation}; hardware {result.hardware.name}{budget}; measured = median of "
        f"{len(result.rows[0].measured_runs_s)} runs; memory = peak activation bytes held for the backward"
    )
    columns = ["schedule", "steps", "recomp", "predicted", "measured", "error", "speedup pred", "speedup meas",
               "mem pred", "mem meas", "mem error"]
    rows = []
    for row in result.rows:
        predicted, measured = result.speedups(row)
        memory_error = row.memory_rel_error
        rows.append([
            row.schedule, f"{row.steps:,}", f"{row.recomputed_cells:,}", _time(row.predicted_s),
            _time(row.measured_s), f"{100 * row.rel_error:+.1f}%",
            f"{predicted:.2f}x" if predicted else "-", f"{measured:.2f}x" if measured else "-",
            format_bytes(row.predicted_peak_activation_bytes), format_bytes(row.measured_peak_activation_bytes),
            "-" if memory_error is None else f"{100 * memory_error:+.1f}%",
        ])
    return "\n".join([header, *_table(columns, rows)])
