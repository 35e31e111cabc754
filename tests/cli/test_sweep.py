"""``rmtsched sweep``: one CSV row per point and schedule with simulate's fields, two plots, progress, jobs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from cli_helpers import run_main

TARGET = ["--model", "armt-llama-1b", "--hardware", "a100-80gb", "--seq-len", "4096,16384,65536,131072",
          "--segment-len", "1024", "--mem-tokens", "128"]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_the_issue_sweep_writes_csv_and_plots_with_simulates_fields(capsys, tmp_path: Path) -> None:
    code, out, err = run_main(capsys, "sweep", *TARGET, "--out", str(tmp_path / "sweep"))
    assert code == 0 and "4 points, 16 rows" in out
    assert err.count("rmtsched sweep: [") == 4 and "[4/4]" in err
    table = rows(tmp_path / "sweep" / "sweep.csv")
    assert [(r["seq_len"], r["schedule"]) for r in table[:4]] == [
        ("4096", "sequential"), ("4096", "diagonal"), ("4096", "greedy"), ("4096", "pipelined")]
    assert len(table) == 16
    for name in ("latency.png", "memory.png"):
        assert (tmp_path / "sweep" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = run_main(capsys, "simulate", "--model", "armt-llama-1b", "--hardware", "a100-80gb",
                            "--seq-len", "65536", "--segment-len", "1024", "--mem-tokens", "128", "--schedule", "all",
                            "--engine", "analytic", "--json")
    simulated = json.loads(out)
    swept = [r for r in table if r["seq_len"] == "65536"]
    for record, row in zip(simulated, swept, strict=True):
        assert set(record) <= set(row)
        assert float(row["makespan_s"]) == pytest.approx(record["makespan_s"], rel=1e-12)
        assert json.loads(row["busy_s"]) == pytest.approx(record["busy_s"], rel=1e-12)
        assert float(row["full_attention_makespan_s"]) == pytest.approx(record["full_attention_makespan_s"])


def test_jobs_give_the_same_rows_as_one_process(capsys, tmp_path: Path) -> None:
    grid = ["--model", "armt-small,armt-tiny", "--hardware", "h200,cpu-generic", "--seq-len", "512,2048",
            "--devices", "2", "--runtime", "eager", "--no-plots", "--no-progress"]
    # cpu-generic has no eager profile: that must be refused, naming the runtime and the hardware
    code, _, err = run_main(capsys, "sweep", *grid, "--out", str(tmp_path / "bad"))
    assert code == 2 and "cpu-generic" in err and "'eager'" in err
    grid[3] = "h200,a100-80gb"
    assert run_main(capsys, "sweep", *grid, "--out", str(tmp_path / "one"))[0] == 0
    assert run_main(capsys, "sweep", *grid, "--jobs", "2", "--out", str(tmp_path / "two"))[0] == 0
    one, two = (tmp_path / "one" / "sweep.csv").read_text(), (tmp_path / "two" / "sweep.csv").read_text()
    assert one == two and len(rows(tmp_path / "one" / "sweep.csv")) == 2 * 2 * 2 * 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seq-len", "4096,,8"], "comma-separated"),
        (["--seq-len", "4096,-8"], "positive integer"),
        (["--seq-len", "64", "--runtime", "warp"], "no runtime 'warp'"),
    ],
)
def test_bad_input_is_one_line_on_stderr(capsys, tmp_path: Path, args: list[str], message: str) -> None:
    code, _, err = run_main(capsys, "sweep", "--model", "armt-tiny", "--hardware", "h200", *args,
                            "--out", str(tmp_path / "out"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_out_must_be_a_directory(capsys, tmp_path: Path) -> None:
    path = tmp_path / "file.csv"
    path.write_text("")
    code, _, err = run_main(capsys, "sweep", "--model", "armt-tiny", "--hardware", "h200", "--seq-len", "64",
                            "--out", str(path))
    assert code == 2 and "is a file" in err
