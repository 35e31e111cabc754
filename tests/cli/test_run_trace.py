"""``rmtsched run --trace``: a Perfetto-loadable trace of a real run whose steps carry the simulator's names.

The simulated trace of the same schedule comes from ``simulate --trace`` (another command, the event
engine's timeline), so the test holds the real trace beside what a user would open next to it.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest
from cli_helpers import run_main

TINY = ["--model", "armt-tiny", "--segment-len", "16", "--seq-len", "72"]  # 5 segments, the last short


def _spans(trace: dict, category: str) -> list[dict]:
    return [event for event in trace["traceEvents"] if event.get("ph") == "X" and event.get("cat") == category]


@pytest.mark.parametrize("schedule", ["sequential", "diagonal", "greedy"])
def test_a_real_trace_names_its_steps_as_the_simulated_one(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           schedule: str) -> None:
    real_path, simulated_path = tmp_path / "real.json", tmp_path / "simulated.json"
    code, out, err = run_main(capsys, "run", *TINY, "--schedule", schedule, "--trace", str(real_path), "--json",
                              "--threads-per-process", "1")
    assert code == 0, err
    assert json.loads(out)["trace"] == str(real_path)
    code, _, err = run_main(capsys, "simulate", *TINY, "--hardware", "cpu-generic", "--schedule", schedule,
                            "--trace", str(simulated_path))
    assert code == 0, err
    real, simulated = json.loads(real_path.read_text()), json.loads(simulated_path.read_text())
    for category in ("step", "cell"):
        assert Counter(e["name"] for e in _spans(real, category)) == Counter(e["name"] for e in _spans(simulated,
                                                                                                       category))
    tracks = [{(e["tid"], e["args"]["name"]) for e in t["traceEvents"] if e["name"] == "thread_name"}
              for t in (real, simulated)]
    assert tracks[0] == tracks[1]
    steps = _spans(real, "step")
    assert [e["name"] for e in steps] == [e["name"] for e in _spans(simulated, "step")]  # same order too
    assert steps[0]["ts"] == 0.0
    for before, after in itertools.pairwise(steps):  # one process: steps in order, never overlapping
        assert before["dur"] > 0 and before["ts"] + before["dur"] <= after["ts"]
    for cell in _spans(real, "cell"):  # each cell spans its step
        step = steps[cell["args"]["step"]]
        assert (cell["ts"], cell["dur"]) == (step["ts"], step["dur"])


def test_a_bad_trace_path_fails_before_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import rmtsched.api.running as running

    monkeypatch.setattr(running, "load_config", lambda *a, **k: pytest.fail("the model was built"))
    code, out, err = run_main(capsys, "run", *TINY, "--schedule", "diagonal", "--trace",
                              str(tmp_path / "missing" / "t.json"))
    assert code == 2 and out == ""
    assert "trace file" in err and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_a_multi_process_run_cannot_be_traced_here(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "run", *TINY, "--schedule", "pipelined", "--devices", "2", "--trace",
                            str(tmp_path / "t.json"))
    assert code == 2 and "a trace records the run in this process: got devices=2" in err


def test_an_in_process_pipelined_run_has_a_track_per_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.json"
    code, _, err = run_main(capsys, "run", *TINY, "--schedule", "pipelined", "--devices", "2", "--in-process",
                            "--threads-per-process", "1", "--trace", str(path))
    assert code == 0, err
    steps = _spans(json.loads(path.read_text()), "step")
    assert {e["tid"] for e in steps} == {0, 1}
