"""Output files: a bad path is refused before any work, and a failed write never replaces a good file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helpers import run_main

from rmtsched.fileio import OutputPathError, atomic_write_text, atomic_writer, check_writable
from rmtsched.sched import available_schedulers
from rmtsched.specs.hardware import load_hardware_spec

SIMULATE = ["simulate", "--model", "armt-tiny", "--seq-len", "256", "--hardware", "cpu-generic", "--schedule"]


def test_check_writable_names_the_problem(tmp_path: Path) -> None:
    assert check_writable(tmp_path / "new.json") == tmp_path / "new.json"
    with pytest.raises(OutputPathError, match=r"--out '.*missing/x\.json': directory '.*missing' does not exist"):
        check_writable(tmp_path / "missing" / "x.json", "--out")
    with pytest.raises(OutputPathError, match="is a directory: expected a file path"):
        check_writable(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere, so permissions cannot be tested")
def test_check_writable_refuses_a_read_only_directory(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OutputPathError, match="is not writable"):
            check_writable(tmp_path / "x.json")
    finally:
        tmp_path.chmod(0o700)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "spec.json", "old\n")
    with pytest.raises(RuntimeError, match="disk full"), atomic_writer(path) as file:
        file.write("half of the new")
        raise RuntimeError("disk full")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["spec.json"]


def test_hardware_spec_save_is_atomic(tmp_path: Path, monkeypatch) -> None:
    spec = load_hardware_spec("cpu-generic")
    spec.save(tmp_path / "hw.json")
    before = (tmp_path / "hw.json").read_text()
    monkeypatch.setattr(type(spec), "to_json", lambda self, indent=2: (_ for _ in ()).throw(OSError("no space")))
    with pytest.raises(OSError, match="no space"):
        spec.replace(name="other").save(tmp_path / "hw.json")
    assert (tmp_path / "hw.json").read_text() == before and os.listdir(tmp_path) == ["hw.json"]


@pytest.mark.parametrize("option", ["--trace", "--plot"])
@pytest.mark.parametrize("schedule", ["diagonal", "all"])
def test_simulate_refuses_a_bad_picture_path_before_simulating(tmp_path, capsys, monkeypatch, option, schedule):
    monkeypatch.setattr("rmtsched.cli.cmd_simulate.run_study", lambda *a, **k: pytest.fail("simulated"))
    code, out, err = run_main(capsys, *SIMULATE, schedule, option, str(tmp_path / "no" / "t.json"))
    assert (code, out) == (2, "") and f"error: {option} '" in err and "does not exist" in err


def test_simulate_writes_its_trace(tmp_path, capsys) -> None:
    code, _, _ = run_main(capsys, *SIMULATE, "all", "--trace", str(tmp_path / "t.json"))
    expected = sorted(f"t.{name}.json" for name in available_schedulers())
    assert code == 0 and sorted(os.listdir(tmp_path)) == expected


@pytest.mark.parametrize("option", ["--out", "--report"])
def test_calibrate_refuses_a_bad_output_path_before_measuring(tmp_path, capsys, monkeypatch, option) -> None:
    monkeypatch.setattr("rmtsched.calibrate.calibration.calibrate", lambda *a, **k: pytest.fail("calibrated"))
    code, out, err = run_main(capsys, "calibrate", "--quick", option, str(tmp_path / "no" / "hw.json"))
    assert (code, out) == (2, "") and f"error: {option} '" in err and "does not exist" in err
