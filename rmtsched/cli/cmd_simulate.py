"""``rmtsched simulate``: predict time, utilisation and memory of schedules for a model on some hardware.

With ``--train`` it costs training schedules instead (forward, recompute and backward steps on one device).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from rmtsched.cli.args import add_run_arguments, positive_int, run_config
from rmtsched.cli.output import to_json
from rmtsched.fileio import check_writable
from rmtsched.sched import TrainGraph, available_train_schedulers, graph_for_tokens, make_train_schedule
from rmtsched.sim.cost import CostModel
from rmtsched.sim.report import format_bytes, format_table, format_time, run_record
from rmtsched.sim.study import ENGINES, Study, run_study, schedules_for
from rmtsched.sim.trace import plot_gantt, write_chrome_trace
from rmtsched.sim.train import BACKWARD_FACTOR, simulate_train
from rmtsched.sim.workload import with_batch, workload_from_spec
from rmtsched.specs.guard import check_fits, grid_estimate
from rmtsched.specs.hardware import HardwareSpec, available_hardware_specs, load_hardware_spec
from rmtsched.specs.model import ModelSpec, load_model_spec

logger = logging.getLogger("rmtsched.cli.simulate")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate", help="simulate schedules of a model on hardware (time, utilisation, memory)"
    )
    add_run_arguments(parser, checkpoint=False, inputs=False, execution=False)  # --model, --seq-len, spec overrides
    parser.add_argument(
        "--hardware", required=True, help=f"a JSON hardware spec file or one of {available_hardware_specs()}"
    )
    parser.add_argument(
        "--runtime", default=None,
        help="how the device is driven: a runtime profile of the hardware spec (GPU presets: eager (default), graphs)",
    )
    parser.add_argument(
        "--schedule", required=True,
        help="a scheduler name, or 'all' (every registered scheduler; those that spread over devices on P)",
    )
    parser.add_argument("--devices", type=positive_int, default=1, help="devices P (pipelined)")
    parser.add_argument("--batch-size", type=positive_int, default=1, help="sequences run together in every cell")
    parser.add_argument("--max-width", type=positive_int, default=None, help="cap on cells per diagonal step")
    parser.add_argument("--engine", choices=sorted(ENGINES), default="des")
    parser.add_argument("--trace", type=Path, default=None, help="write a Chrome trace (with 'all': one per schedule)")
    parser.add_argument("--plot", type=Path, default=None, help="write a Gantt PNG (with 'all': one per schedule)")
    parser.add_argument("--json", action="store_true", help="print JSON: a list, one record per schedule")
    train = parser.add_argument_group("training")
    train.add_argument("--train", action="store_true", help="simulate a training step under training schedules")
    train.add_argument("--truncate", type=positive_int, default=None, metavar="K", help="BPTT over the last K segments")
    train.add_argument("--memory-budget", type=positive_int, default=None, metavar="CELLS",
                       help="most cells' activations held at once ('checkpointed')")
    train.add_argument("--backward-factor", type=float, default=BACKWARD_FACTOR,
                       help="a backward step's cost over its forward step's (default %(default)s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = run_config(args)
    spec = load_model_spec(config.model).replace(**config.spec_overrides)
    hardware = load_hardware_spec(args.hardware)
    if args.runtime is not None:
        hardware = hardware.with_runtime(args.runtime)
    if args.train:
        return _run_train(args, spec, hardware)
    schedules = schedules_for(args.schedule, args.devices)
    segments = math.ceil(args.seq_len / spec.segment_len)
    what = f"simulating {spec.name} on {args.seq_len:,} tokens"
    check_fits(grid_estimate(what, spec.num_layers, segments, len(schedules)), force=args.force)
    compare = args.schedule == "all"
    for option, path in (("--trace", args.trace), ("--plot", args.plot)):
        if path is not None:  # a bad path is refused now, not after the simulation
            for name, _ in schedules:
                check_writable(_per_schedule(path, name, compare), option)
    study = run_study(spec, hardware, args.seq_len, schedules, max_width=args.max_width, engine=args.engine,
                      batch_size=args.batch_size)
    _write_pictures(study, args.trace, args.plot, several=compare)
    if args.json:
        print(to_json([run_record(study, run) for run in study.runs]))
    else:
        print(format_table(study, compare))
    for run in study.runs:
        if not run.fits_in_memory:  # a warning through logging, so -q hides it
            logger.warning(
                "simulate: %s needs %.2f GB on its busiest device but %s has %.2f GB (fits_in_memory: false)",
                run.schedule, run.result.max_peak_memory_bytes / 1e9, hardware.name, hardware.memory_bytes / 1e9,
            )
    return 0


def _write_pictures(study: Study, trace: Path | None, plot: Path | None, several: bool) -> None:
    for run in study.runs:
        title = f"{study.spec.name} {run.schedule} on {study.hardware.name}, {study.seq_len:,} tokens"
        if trace is not None:
            write_chrome_trace(run.result, _per_schedule(trace, run.schedule, several), name=title)
        if plot is not None:
            plot_gantt(run.result, _per_schedule(plot, run.schedule, several), title=title)


def _per_schedule(path: Path, schedule: str, several: bool) -> Path:
    """``trace.json`` -> ``trace.diagonal.json`` when several schedules each need a file."""
    return path.with_name(f"{path.stem}.{schedule}{path.suffix}") if several else path


def _run_train(args: argparse.Namespace, spec: ModelSpec, hardware: HardwareSpec) -> int:
    """Every requested training schedule of one step over ``--seq-len`` tokens: times by phase, peak memory
    (of the busiest device)."""
    names = available_train_schedulers() if args.schedule == "all" else [args.schedule]
    forward = graph_for_tokens(spec, args.seq_len)
    check_fits(grid_estimate(f"simulating training of {spec.name}", spec.num_layers, forward.num_segments,
                             2 * len(names)), force=args.force)
    graph = TrainGraph(forward, args.truncate)
    cost = CostModel(with_batch(workload_from_spec(spec), args.batch_size), hardware)
    records = []
    for name in names:
        budget = args.memory_budget if name == "checkpointed" else None
        devices = args.devices if name == "pipelined" or args.schedule != "all" else 1  # 'all': P for pipelined
        schedule = make_train_schedule(graph, name, max_width=args.max_width, memory_budget=budget,
                                       num_devices=devices)
        result = simulate_train(schedule, graph, cost, backward_factor=args.backward_factor)
        records.append({"model": spec.name, "hardware": hardware.name, "seq_len": args.seq_len,
                        "layers": forward.num_layers, "segments": forward.num_segments, "truncation": args.truncate,
                        "memory_budget": budget, "backward_factor": args.backward_factor, **result.to_dict()})
    if args.json:
        print(to_json(records))
        return 0
    print(f"training step of {spec.name} on {hardware.name}: {args.seq_len:,} tokens = {forward.num_segments:,} "
          f"segments x {forward.num_layers} layers; backward = {args.backward_factor} x forward")
    print(f"{'schedule':<14}{'steps':>8}{'step time':>12}{'forward':>12}{'recompute':>12}{'backward':>12}"
          f"{'peak mem':>12}")
    for record in records:
        times = (format_time(record[key]) for key in ("makespan_s", "forward_s", "recompute_s", "backward_s"))
        print(f"{record['schedule']:<14}{record['steps']:>8,}" + "".join(f"{t:>12}" for t in times)
              + f"{format_bytes(record['peak_memory_bytes']):>12}")
    return 0
