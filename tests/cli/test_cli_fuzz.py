"""Malformed values thrown at every subcommand's options and at spec files: always exit 2 with one line.

The options are read from the parser itself (every subcommand, every option that takes a value), so a new
option of a known kind is fuzzed without editing this file: integers, choices, numbers of seconds, output
and input paths, and the name options that must name something that exists. Each case asserts exit
status 2, nothing on stdout, exactly one line on stderr that names the bad value (or the bad field of a
spec file), and no traceback; hypothesis's deadline catches a command that starts real work instead.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import pytest
from cli_helpers import run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmtsched.cli.main import build_parser
from rmtsched.specs.hardware import load_hardware_spec
from rmtsched.specs.model import load_model_spec

# What each required option gets, so a command is complete apart from the one malformed value.
REQUIRED = {"--model": "armt-tiny", "--seq-len": "64", "--hardware": "cpu-generic", "--schedule": "diagonal",
            "--layers": "2", "--segments": "2", "--out": str(Path(tempfile.gettempdir()) / "rmtsched-fuzz-sweep")}
# Added to every command so a malformed value that slipped through would still end quickly; run and verify
# also need a model and an input (neither is required by argparse: a checkpoint or a token file may give them).
CHEAP = {"calibrate": ["--quick"], "compare": ["--repeat", "1"],
         "run": ["--no-warmup", "--model", "armt-tiny", "--seq-len", "64"],
         "verify": ["--model", "armt-tiny", "--seq-len", "64"],
         "generate": ["--model", "armt-tiny", "--seq-len", "64", "--max-new-tokens", "1", "--no-warmup"]}
# String options that must name something that exists (a preset, a device, a dtype, a clock, a scheduler).
NAMED = {"--model", "--hardware", "--device", "--dtype", "--clock", "--schedule", "--scheduler", "--engine", "--rule",
         "--gemm"}
BAD_INTS = ["-3", "0", "abc", "1.5", "", "1e3", "nan", "0x10", "2**4"]
BAD_SECONDS = ["nan", "inf", "-1", "0", "abc", ""]
BAD_FLOATS = ["abc", "", "1,5", "--"]
BAD_NAMES = ["no-such-thing", "", "ARMT-TINY", "../etc"]
MISSING_DIR = "/nonexistent-rmtsched-dir/out.json"


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def bad_values(action: argparse.Action) -> list[str]:
    """Malformed values for one option, by what kind of value it takes ([] if any string is acceptable)."""
    flag = action.option_strings[-1]
    type_name = getattr(action.type, "__name__", "")
    if action.choices is not None:
        return BAD_NAMES
    if type_name in ("positive_int", "non_negative_int", "int"):
        return [value for value in BAD_INTS if not (type_name == "non_negative_int" and value == "0")]
    if "seconds" in type_name:
        return BAD_SECONDS
    if action.type is float:
        return BAD_FLOATS
    if action.type is Path:
        return [MISSING_DIR]
    if action.type is None and flag in NAMED:
        return BAD_NAMES
    return []


def base_argv(command: str, parser: argparse.ArgumentParser, skip: argparse.Action) -> list[str]:
    argv = [command, *CHEAP.get(command, [])]
    for action in parser._actions:
        if action.required and action is not skip:
            flag = next(f for f in action.option_strings if f.startswith("--"))
            assert flag in REQUIRED, f"rmtsched {command}: add a valid value for required option {flag} to REQUIRED"
            argv += [flag, REQUIRED[flag]]
    return argv


CASES = [
    (command, action.option_strings[-1], value, base_argv(command, parser, action))
    for command, parser in sorted(subcommands().items())
    for action in parser._actions
    if action.option_strings and action.nargs != 0
    for value in bad_values(action)
]


def test_every_subcommand_has_fuzzed_options() -> None:
    assert {"schedule", "simulate", "run", "verify", "compare", "calibrate"} <= {command for command, *_ in CASES}


def assert_one_line_naming(code: int, out: str, err: str, *names: str) -> None:
    assert code == 2, f"exit {code}, stderr {err!r}"
    assert out == "" and "Traceback" not in err
    assert err.count("\n") == 1, err
    assert any(name in err for name in names), f"{names} not named in {err!r}"


@settings(max_examples=80, deadline=20000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(CASES))
def test_malformed_option_values_exit_2_in_one_line(capsys, case) -> None:
    _, flag, value, argv = case
    code, out, err = run_main(capsys, *argv, flag, value)
    names = [value, MISSING_DIR.rsplit("/", 1)[0]] if value else [flag, "expected"]
    assert_one_line_naming(code, out, err, *names)


SPECS = {"model": load_model_spec("armt-tiny").to_dict(), "hardware": load_hardware_spec("cpu-generic").to_dict()}
# Malformed for every field: no field takes a negative number, a bool in place of a number, null, a list
# or an object where a scalar is due; NaN and Infinity are not JSON at all.
BAD_FIELD_VALUES = ["-1", "true", "null", '"x"', "[1]", "NaN", "Infinity", "-Infinity", "1e400"]


def accepts(field: str, value: object, bad: str) -> bool:
    """The few (field, value) pairs that are fine: a bool field takes true, a name or note any string, and a
    link may be infinitely fast (1e400 reads as infinity)."""
    return {bool: "true", str: '"x"'}.get(type(value)) == bad or (field, bad) == ("link_bandwidth_bytes_per_s", "1e400")


@settings(max_examples=80, deadline=20000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(SPECS)), data=st.data(), bad=st.sampled_from(BAD_FIELD_VALUES))
def test_malformed_spec_files_exit_2_naming_the_field(tmp_path_factory, capsys, kind, data, bad) -> None:
    spec = SPECS[kind]
    field = data.draw(st.sampled_from(sorted(name for name, value in spec.items() if not accepts(name, value, bad))))
    text = json.dumps({name: value for name, value in spec.items() if name != field})[:-1] + f', "{field}": {bad}}}'
    path = tmp_path_factory.mktemp("spec") / f"{kind}.json"
    path.write_text(text)
    argv = ["simulate", "--model", "armt-tiny", "--hardware", "cpu-generic", "--seq-len", "256", "--schedule", "all"]
    argv[argv.index(f"--{kind}") + 1] = str(path)
    code, out, err = run_main(capsys, *argv)
    literal = bad.lstrip("-") if bad in ("NaN", "Infinity", "-Infinity") else None
    assert_one_line_naming(code, out, err, field, *([literal] if literal else []))


def test_json_output_never_holds_nan_or_infinity(capsys) -> None:
    code, out, _ = run_main(capsys, "simulate", "--model", "armt-tiny", "--seq-len", "256", "--hardware",
                            "cpu-generic", "--schedule", "all", "--json")
    assert code == 0
    json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} in --json output"))
    assert all(math.isfinite(v) for r in json.loads(out) for v in r.values() if isinstance(v, float))
