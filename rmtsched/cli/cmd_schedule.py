"""``rmtsched schedule``: build a cell DAG, run a scheduler, show the grid (or JSON)."""

from __future__ import annotations

import argparse

from rmtsched.cli.args import positive_int
from rmtsched.cli.output import to_json
from rmtsched.sched import (
    available_rules,
    available_schedulers,
    build_cell_graph,
    make_schedule,
    render_grid,
    validate,
)
from rmtsched.specs.guard import check_fits, grid_estimate


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("schedule", help="build and show a schedule for an L x S grid")
    parser.add_argument("--layers", type=positive_int, required=True)
    parser.add_argument("--segments", type=positive_int, required=True)
    parser.add_argument("--rule", choices=available_rules(), default="layer_local", help="dependency rule")
    # --schedule, as in simulate/run/compare; --scheduler is the old name, kept as an alias.
    parser.add_argument("--schedule", "--scheduler", dest="schedule", default="diagonal",
                        help=f"one of {available_schedulers()}")
    parser.add_argument("--devices", type=positive_int, default=1)
    parser.add_argument("--max-width", type=positive_int, default=None)
    parser.add_argument("--json", action="store_true", help="print the schedule as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    estimate = grid_estimate(f"a {args.layers:,} x {args.segments:,} schedule", args.layers, args.segments)
    check_fits(estimate, force=args.force)
    graph = build_cell_graph(args.layers, args.segments, rule=args.rule)
    schedule = make_schedule(graph, args.schedule, max_width=args.max_width, num_devices=args.devices)
    validate(schedule, graph)
    if args.json:
        print(to_json(schedule.to_dict()))
    else:
        print(render_grid(schedule, graph))
    return 0
