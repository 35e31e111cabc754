"""Entry point: build the parser from the discovered subcommands, run one, turn every failure into one line.

The exit status says what happened (``EXIT_CODES``, also in ``--help``): a script can tell a failed check
from bad input from a run that broke. Nothing here imports torch: ``--help``, ``--version``, ``schedule``
and ``simulate`` start in a fraction of a second because the subcommands import it inside their handlers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

import rmtsched.cli
from rmtsched import __version__
from rmtsched.errors import RmtschedError, RunFailure

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_RUN_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = {
    EXIT_OK: "ok",
    EXIT_CHECK_FAILED: "a check failed (verify: a schedule differs from sequential beyond the tolerance)",
    EXIT_BAD_INPUT: "bad input: an argument, a spec or checkpoint file, or a request too large for this machine",
    EXIT_RUN_FAILED: "the run failed: a rank died or stalled, out of memory, an I/O error, an internal error",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}
EPILOG = "exit status:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items())

logger = logging.getLogger("rmtsched")


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single ``rmtsched: error: ...`` line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def add_common_arguments(parser: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """-v/-q, --no-progress and --force, accepted by every subcommand (and -v/-q before the subcommand too).

    On subcommands -v/-q have no default, so ``rmtsched -v simulate ...`` is not reset by the subparser's
    own default; a subcommand that already defines one of these options keeps its own.
    """
    count_default = 0 if top_level else argparse.SUPPRESS
    options = {
        ("-v", "--verbose"): dict(action="count", default=count_default,
                                  help="log more (-v: info, -vv: debug); an internal error prints its traceback"),
        ("-q", "--quiet"): dict(action="count", default=count_default, help="log only errors"),
    }
    if not top_level:
        options[("--no-progress",)] = dict(action="store_true",
                                           help="no progress bar (bars are drawn only when stderr is a terminal)")
        options[("--force",)] = dict(action="store_true",
                                     help="run even where the size guard estimates the request will not fit")
    for flags, settings in options.items():
        if not any(flag in parser._option_string_actions for flag in flags):
            parser.add_argument(*flags, **settings)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="rmtsched",
        description="Schedule, simulate and run layer-recurrent memory transformers (RMT, ARMT).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rmtsched {__version__}")
    add_common_arguments(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    for module_info in sorted(pkgutil.iter_modules(rmtsched.cli.__path__), key=lambda m: m.name):
        if module_info.name.startswith("cmd_"):
            module = importlib.import_module(f"rmtsched.cli.{module_info.name}")
            module.register(subparsers)
    for subparser in subparsers.choices.values():
        add_common_arguments(subparser)
        subparser.epilog = subparser.epilog or EPILOG
        subparser.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (pytest's capture swaps it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(verbosity: int) -> None:
    """The ``rmtsched`` logger: warnings by default, info with -v, debug with -vv, errors only with -q."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(max(-1, verbosity), logging.DEBUG)
    logger.setLevel(level)
    if not any(isinstance(handler, _CurrentStderr) for handler in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("rmtsched: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = args.verbose - args.quiet
    configure_logging(verbose)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        code = int(args.handler(args) or EXIT_OK)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at interpreter exit
        return code
    except KeyboardInterrupt:
        print(f"rmtsched {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()  # `rmtsched ... | head`: the reader has all it wanted
        return EXIT_OK
    except (RunFailure, MemoryError, OSError) as exc:  # before RmtschedError: a failure that is both is a failure
        _log_traceback(verbose)
        return _fail(args.command, _describe(exc), EXIT_RUN_FAILED, _notes(exc, verbose))
    except RmtschedError as exc:
        return _fail(args.command, str(exc), EXIT_BAD_INPUT, _notes(exc, verbose))
    except Exception as exc:
        _log_traceback(verbose)
        if _is_out_of_memory(exc):
            return _fail(args.command, f"out of memory: {_describe(exc)}", EXIT_RUN_FAILED)
        hint = "" if verbose > 0 else " (run with -v for the traceback)"
        return _fail(args.command, f"internal error: {_describe(exc)}{hint}", EXIT_RUN_FAILED)


def _fail(command: str, message: str, code: int, notes: Sequence[str] = ()) -> int:
    """One line on stderr; then, only under ``-v``, the notes an error carries (e.g. the schedule grid with
    the failing cells marked, which validator and distributed errors attach)."""
    print(f"rmtsched {command}: error: {' '.join(message.split())}", file=sys.stderr)
    for note in notes:
        print(note, file=sys.stderr)
    return code


def _notes(exc: BaseException, verbose: int) -> list[str]:
    return list(getattr(exc, "__notes__", ())) if verbose > 0 else []


def _describe(exc: BaseException) -> str:
    """``str(exc)``, with the exception type where the message alone would not say what happened."""
    if isinstance(exc, RunFailure):
        return str(exc) or type(exc).__name__
    if isinstance(exc, MemoryError):
        return f"out of memory (MemoryError{': ' + str(exc) if str(exc) else ''})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _is_out_of_memory(exc: BaseException) -> bool:
    """torch's CPU and CUDA allocators raise ``torch.OutOfMemoryError`` (checked without importing torch)."""
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return oom is not None and isinstance(exc, oom)


def _log_traceback(verbose: int) -> None:
    if verbose > 0:
        traceback.print_exc(file=sys.stderr)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (an in-process test's captured stdout)
        pass
