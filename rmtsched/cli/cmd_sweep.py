"""``rmtsched sweep``: simulate a grid of lengths, segment sizes, memory sizes, devices and hardware; CSV + plots."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rmtsched.cli.args import non_negative_int, positive_int
from rmtsched.cli.output import provenance
from rmtsched.errors import SpecError
from rmtsched.fileio import check_writable
from rmtsched.sim.study import ENGINES
from rmtsched.sim.sweep import SweepPoint, grid, plot_sweep, point_label, run_sweep, write_csv
from rmtsched.specs.hardware import available_hardware_specs
from rmtsched.specs.model import available_model_specs


def comma_list(item: Callable[[str], object]) -> Callable[[str], list]:
    """An argparse type: comma-separated values, each checked by ``item``."""

    def parse(text: str) -> list:
        values = [part.strip() for part in text.split(",")]
        if not all(values):
            raise argparse.ArgumentTypeError(f"expected comma-separated values, got {text!r}")
        return [item(value) for value in values]

    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="simulate a grid of configurations: one CSV row per point and schedule, latency/memory plots"
    )
    parser.add_argument("--model", type=comma_list(str), required=True,
                        help=f"model specs, comma-separated (JSON files or of {available_model_specs()})")
    parser.add_argument("--hardware", type=comma_list(str), required=True,
                        help=f"hardware specs, comma-separated (JSON files or of {available_hardware_specs()})")
    parser.add_argument("--seq-len", type=comma_list(positive_int), required=True,
                        help="input lengths, e.g. 4096,65536")
    parser.add_argument("--segment-len", type=comma_list(positive_int), default=[None], help="segment lengths T")
    parser.add_argument("--mem-tokens", type=comma_list(non_negative_int), default=[None], help="memory tokens M")
    parser.add_argument("--devices", type=comma_list(positive_int), default=[1], help="devices P (pipelined)")
    parser.add_argument("--batch-size", type=comma_list(positive_int), default=[1], help="sequences per cell")
    parser.add_argument("--runtime", type=comma_list(str), default=[None], help="runtime profiles, e.g. eager,graphs")
    parser.add_argument("--schedule", default="all", help="a scheduler name, or 'all' (every registered one)")
    parser.add_argument("--max-width", type=positive_int, default=None, help="cap on cells per diagonal step")
    parser.add_argument("--engine", choices=sorted(ENGINES), default="analytic",
                        help="analytic (closed forms, the event engine where none exists) or des")
    parser.add_argument("--jobs", type=non_negative_int, default=1, help="processes to run points in (0: one a core)")
    parser.add_argument("--out", type=Path, required=True, help="directory for sweep.csv, latency.png, memory.png")
    parser.add_argument("--no-plots", action="store_true", help="write only the CSV")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise SpecError(f"--out {str(args.out)!r} is a file: expected a directory (it is created if missing)")
    if not args.out.parent.is_dir():
        raise SpecError(f"--out {str(args.out)!r}: directory {str(args.out.parent)!r} does not exist")
    args.out.mkdir(exist_ok=True)
    paths = {name: check_writable(args.out / name) for name in ("sweep.csv", "latency.png", "memory.png")}
    points = grid(args.model, args.hardware, args.seq_len, args.segment_len, args.mem_tokens, args.devices,
                  args.batch_size, args.runtime)
    started = time.perf_counter()

    def progress(done: int, total: int, point: SweepPoint) -> None:
        elapsed = time.perf_counter() - started
        print(f"rmtsched sweep: [{done}/{total}] {elapsed:.1f} s  {point_label(point)}", file=sys.stderr)

    records = run_sweep(points, args.schedule, args.engine, args.max_width, args.jobs,
                        None if args.no_progress else progress)
    facts = dict(provenance())  # a copy: provenance() is cached
    facts["host"] = json.dumps(facts["host"], sort_keys=True)  # one CSV cell
    write_csv([{**record, **facts} for record in records], paths["sweep.csv"])
    written = [paths["sweep.csv"]]
    if not args.no_plots:
        plot_sweep(records, paths["latency.png"], paths["memory.png"])
        written += [paths["latency.png"], paths["memory.png"]]
    print(f"{len(points)} points, {len(records)} rows in {time.perf_counter() - started:.1f} s: "
          + ", ".join(str(path) for path in written))
    return 0
