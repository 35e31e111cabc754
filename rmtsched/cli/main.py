"""Entry point: build the parser from the discovered subcommands, run one, turn errors into one line."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

import rmtsched.cli
from rmtsched import __version__
from rmtsched.errors import RmtschedError


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single ``rmtsched: error: ...`` line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="rmtsched",
        description="Schedule, simulate and run layer-recurrent memory transformers (RMT, ARMT).",
    )
    parser.add_argument("--version", action="version", version=f"rmtsched {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    for module_info in sorted(pkgutil.iter_modules(rmtsched.cli.__path__), key=lambda m: m.name):
        if module_info.name.startswith("cmd_"):
            module = importlib.import_module(f"rmtsched.cli.{module_info.name}")
            module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.handler(args) or 0)
    except RmtschedError as exc:
        print(f"rmtsched {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rmtsched {args.command}: interrupted", file=sys.stderr)
        return 130
