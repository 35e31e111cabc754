"""The shell around every subcommand: exit codes, one-line failures, logging, progress, strict stamped JSON."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import math
import subprocess
import sys

import pytest
from cli_helpers import run_main

from rmtsched import __version__
from rmtsched.cli import main as cli_main
from rmtsched.cli.output import show_progress, to_json
from rmtsched.errors import RunFailure, SpecError

SCHEDULE = ["schedule", "--layers", "2", "--segments", "3"]


def with_handler(monkeypatch: pytest.MonkeyPatch, handler) -> None:
    """Make ``rmtsched schedule`` run ``handler`` instead of its own."""
    monkeypatch.setattr("rmtsched.cli.cmd_schedule.run", handler)


def raising(exc: BaseException):
    def handler(args: argparse.Namespace) -> int:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("exc", "code", "words"),
    [
        (SpecError("model 'x': d_model must be a positive integer, got 0"), 2, "d_model must be"),
        (RunFailure("rank 1 died at step 7"), 3, "rank 1 died at step 7"),
        (MemoryError(), 3, "out of memory"),
        (OSError(28, "No space left on device"), 3, "No space left on device"),
        (ZeroDivisionError("division by zero"), 3, "internal error: ZeroDivisionError: division by zero"),
    ],
)
def test_every_failure_is_one_line_with_its_exit_code(monkeypatch, capsys, exc, code, words) -> None:
    with_handler(monkeypatch, raising(exc))
    got, out, err = run_main(capsys, *SCHEDULE)
    assert (got, out) == (code, "")
    assert err.count("\n") == 1 and err.startswith("rmtsched schedule: error: ") and words in err
    assert "Traceback" not in err


def test_a_failure_that_is_also_bad_input_counts_as_a_failure(monkeypatch, capsys) -> None:
    class RankDied(SpecError, RunFailure):
        pass

    with_handler(monkeypatch, raising(RankDied("rank 0 died")))
    assert run_main(capsys, *SCHEDULE)[0] == 3


def test_verbose_logs_the_size_estimate(capsys) -> None:
    code, _, err = run_main(capsys, *SCHEDULE, "-v")
    assert code == 0 and err == "rmtsched: INFO: size guard: a 2 x 3 schedule: 6 cells, about 200.0 MB of memory " \
                                "and 1.5e-05 s\n"


def test_verbose_shows_the_traceback_of_an_internal_error(monkeypatch, capsys) -> None:
    with_handler(monkeypatch, raising(KeyError("lost")))
    code, _, err = run_main(capsys, *SCHEDULE, "-v")
    assert code == 3 and "Traceback (most recent call last)" in err and "KeyError" in err.splitlines()[-1]


def test_torch_out_of_memory_is_a_run_failure(monkeypatch, capsys) -> None:
    torch = pytest.importorskip("torch")
    with_handler(monkeypatch, raising(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")))
    code, _, err = run_main(capsys, *SCHEDULE)
    assert code == 3 and "error: out of memory: OutOfMemoryError: CUDA out of memory" in err


def test_a_failed_check_keeps_exit_code_1(monkeypatch, capsys) -> None:
    with_handler(monkeypatch, lambda args: 1)
    assert run_main(capsys, *SCHEDULE)[0] == 1


def test_argparse_errors_exit_2_in_one_line(capsys) -> None:
    code, out, err = run_main(capsys, "schedule", "--layers", "zero", "--segments", "3")
    assert (code, out) == (2, "") and err.count("\n") == 1 and "'zero'" in err


def test_help_documents_the_exit_codes(capsys) -> None:
    for argv in (["--help"], ["schedule", "--help"]):
        code, out, _ = run_main(capsys, *argv)
        assert code == 0
        for line in ("0    ok", "1    a check failed", "2    bad input", "3    the run failed"):
            assert line in out


def test_every_subcommand_accepts_the_common_options(capsys) -> None:
    subparsers = next(a for a in cli_main.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in subparsers.choices.items():
        options = parser._option_string_actions
        for flag in ("--no-progress", "--force", "-v", "--verbose", "-q", "--quiet"):
            assert flag in options, f"rmtsched {name} lacks {flag}"


@pytest.mark.parametrize(("argv", "level"), [([], logging.WARNING), (["-v"], logging.INFO), (["-vv"], logging.DEBUG),
                                             (["-q"], logging.ERROR), (["-v", "-q"], logging.WARNING)])
def test_verbosity_sets_the_rmtsched_logger_level(capsys, argv, level) -> None:
    assert run_main(capsys, *SCHEDULE, *argv)[0] == 0
    assert logging.getLogger("rmtsched").level == level
    assert run_main(capsys, *argv, *SCHEDULE)[0] == 0  # before the subcommand too
    assert logging.getLogger("rmtsched").level == level


def test_log_records_reach_the_current_stderr(monkeypatch, capsys) -> None:
    def handler(args: argparse.Namespace) -> int:
        logging.getLogger("rmtsched.cli").info("building the grid")
        return 0

    with_handler(monkeypatch, handler)
    assert run_main(capsys, *SCHEDULE)[2] == ""
    assert run_main(capsys, *SCHEDULE, "-v")[2] == "rmtsched: INFO: building the grid\n"


def test_progress_is_drawn_only_on_a_terminal(monkeypatch) -> None:
    class Stderr:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.setattr(sys, "stderr", Stderr(False))
    assert not show_progress(argparse.Namespace(no_progress=False))
    monkeypatch.setattr(sys, "stderr", Stderr(True))
    assert show_progress(argparse.Namespace(no_progress=False))
    assert not show_progress(argparse.Namespace(no_progress=True))


def test_json_records_carry_versions_and_host() -> None:
    records = json.loads(to_json([{"schedule": "diagonal"}, {"schedule": "sequential"}]))
    for record in records:
        assert record["rmtsched_version"] == __version__
        assert record["torch_version"] == importlib.metadata.version("torch")
        assert record["host"]["cpu_count"] >= 1 and record["host"]["python"] == sys.version.split()[0]
    assert json.loads(to_json({"host": "mine"}))["host"] == "mine"  # a record's own field wins


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_json_refuses_non_finite_values_naming_the_field(value: float) -> None:
    with pytest.raises(RunFailure, match=r"output field runs\[1\]\.makespan_s is (nan|inf|-inf)"):
        to_json({"runs": [{"makespan_s": 1.0}, {"makespan_s": value}]})


def test_schedule_json_carries_provenance_and_still_parses(capsys) -> None:
    from rmtsched.sched import Schedule

    code, out, _ = run_main(capsys, *SCHEDULE, "--json")
    record = json.loads(out)
    assert code == 0 and record["rmtsched_version"] == __version__
    assert Schedule.from_dict(record).num_steps == record["num_steps"]


def test_schedule_accepts_schedule_and_the_old_scheduler_alias(capsys) -> None:
    outputs = {run_main(capsys, *SCHEDULE, flag, "sequential")[1] for flag in ("--schedule", "--scheduler")}
    assert len(outputs) == 1 and "sequential: 6 steps" in outputs.pop()


def test_a_closed_pipe_ends_quietly() -> None:
    # 600 kB of JSON: far more than a pipe holds, so the writer is still writing when `head` closes it.
    command = f"{sys.executable} -m rmtsched schedule --layers 8 --segments 4000 --json | head -c 10"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.stdout == '{"rmtsched'
    assert "BrokenPipeError" not in done.stderr and "Traceback" not in done.stderr and done.stderr == ""
    assert done.returncode == 0


def test_the_grid_an_error_carries_is_printed_only_under_verbose(monkeypatch, capsys) -> None:
    """Validator and distributed errors attach the schedule grid as a note: one line by default, the grid with -v."""
    from rmtsched.sched import build_cell_graph, make_schedule, validate
    from rmtsched.sched.schedule import Schedule

    graph = build_cell_graph(2, 3)
    good = make_schedule(graph, "sequential")
    bad = Schedule(tuple(reversed(good.steps)), scheduler="reversed")
    with pytest.raises(Exception) as info:
        validate(bad, graph)
    with_handler(monkeypatch, raising(info.value))
    assert cli_main.main(SCHEDULE) == 2
    quiet = capsys.readouterr().err
    assert quiet.count("\n") == 1
    assert cli_main.main(["-v", *SCHEDULE]) == 2
    loud = capsys.readouterr().err
    assert loud.splitlines()[0] == quiet.strip() and "[" in loud and loud.count("\n") > 3
