"""``rmtsched schedule``: build a cell DAG, run a scheduler, show the grid (or JSON).

With ``--train`` the DAG is the training DAG (forward and backward cells) and the scheduler a training
scheduler; the output shows one grid per phase.
"""

from __future__ import annotations

import argparse

from rmtsched.cli.args import positive_int
from rmtsched.cli.output import to_json
from rmtsched.errors import ScheduleError
from rmtsched.sched import (
    CellGraph,
    TrainGraph,
    available_rules,
    available_schedulers,
    available_train_schedulers,
    build_cell_graph,
    make_schedule,
    make_train_schedule,
    render_grid,
    render_train_grid,
    validate,
    validate_train,
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
    train = parser.add_argument_group("training (forward and backward cells)")
    train.add_argument("--train", action="store_true",
                       help=f"schedule a training step; --schedule is then one of {available_train_schedulers()}")
    train.add_argument("--truncate", type=positive_int, default=None, metavar="K",
                       help="BPTT over the last K segments only (default: full BPTT)")
    train.add_argument("--memory-budget", type=positive_int, default=None, metavar="CELLS",
                       help="most cells' activations held at once (the 'checkpointed' training scheduler)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    estimate = grid_estimate(f"a {args.layers:,} x {args.segments:,} schedule", args.layers, args.segments)
    check_fits(estimate, force=args.force)
    graph = build_cell_graph(args.layers, args.segments, rule=args.rule)
    if args.train:
        return _run_train(args, graph)
    for flag, value in (("--truncate", args.truncate), ("--memory-budget", args.memory_budget)):
        if value is not None:
            raise ScheduleError(f"{flag} applies to a training schedule: add --train")
    schedule = make_schedule(graph, args.schedule, max_width=args.max_width, num_devices=args.devices)
    validate(schedule, graph)
    if args.json:
        print(to_json(schedule.to_dict()))
    else:
        print(render_grid(schedule, graph))
    return 0


def _run_train(args: argparse.Namespace, forward: CellGraph) -> int:
    graph = TrainGraph(forward, args.truncate)
    schedule = make_train_schedule(graph, args.schedule, max_width=args.max_width, memory_budget=args.memory_budget,
                                   num_devices=args.devices)
    validate_train(schedule, graph)
    print(to_json(schedule.to_dict()) if args.json else render_train_grid(schedule, graph))
    return 0
