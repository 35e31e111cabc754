"""``rmtsched schedule``: build a cell DAG, run a scheduler, show the grid (or JSON)."""

from __future__ import annotations

import argparse
import json

from rmtsched.cli.args import positive_int
from rmtsched.sched import (
    available_rules,
    available_schedulers,
    build_cell_graph,
    make_schedule,
    render_grid,
    validate,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("schedule", help="build and show a schedule for an L x S grid")
    parser.add_argument("--layers", type=positive_int, required=True)
    parser.add_argument("--segments", type=positive_int, required=True)
    parser.add_argument("--rule", choices=available_rules(), default="layer_local", help="dependency rule")
    parser.add_argument("--scheduler", default="diagonal", help=f"one of {available_schedulers()}")
    parser.add_argument("--devices", type=positive_int, default=1)
    parser.add_argument("--max-width", type=positive_int, default=None)
    parser.add_argument("--json", action="store_true", help="print the schedule as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    graph = build_cell_graph(args.layers, args.segments, rule=args.rule)
    schedule = make_schedule(graph, args.scheduler, max_width=args.max_width, num_devices=args.devices)
    validate(schedule, graph)
    if args.json:
        print(json.dumps(schedule.to_dict()))
    else:
        print(render_grid(schedule, graph))
    return 0
