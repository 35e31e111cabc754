"""``rmtsched simulate --train``: a table of training schedules, JSON records, one stderr line per bad argument."""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_main

ARGS = ["simulate", "--train", "--model", "armt-small", "--seq-len", "2048", "--hardware", "h200"]


def test_all_training_schedules_are_tabled_with_a_capped_memory_for_checkpointed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_main(capsys, *ARGS, "--schedule", "all", "--memory-budget", "20", "--devices", "2", "--json")
    assert (code, err) == (0, "")
    records = {record["schedule"]: record for record in json.loads(out)}
    assert sorted(records) == ["checkpointed", "diagonal", "greedy", "pipelined", "sequential"]
    assert records["pipelined"]["devices"] == 2 and records["diagonal"]["devices"] == 1
    assert records["diagonal"]["makespan_s"] < records["sequential"]["makespan_s"]
    assert records["checkpointed"]["recompute_s"] > 0 and records["diagonal"]["recompute_s"] == 0
    assert records["checkpointed"]["peak_memory_bytes"] < records["diagonal"]["peak_memory_bytes"]
    for name, record in records.items():
        busy = record["forward_s"] + record["recompute_s"] + record["backward_s"]
        if name == "pipelined":  # two devices overlap some of their work
            assert busy / 2 <= record["makespan_s"] < busy
        else:
            assert record["makespan_s"] == pytest.approx(busy)


def test_the_table_names_each_schedule_once(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, *ARGS, "--schedule", "diagonal", "--truncate", "4")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("training step of armt-small on h200: 2,048 tokens")
    assert lines[1].split()[:3] == ["schedule", "steps", "step"]
    assert lines[2].split()[0] == "diagonal" and len(lines) == 3


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--schedule", "diagonal", "--devices", "2"], "'diagonal' runs on one device, got num_devices=2"),
        (["--schedule", "nope"], "unknown training scheduler 'nope'"),
        (["--schedule", "diagonal", "--backward-factor", "0"], "backward_factor must be positive, got 0.0"),
        (["--schedule", "checkpointed", "--memory-budget", "2"], "memory_budget=2 cells cannot hold one step"),
    ],
)
def test_bad_training_arguments_exit_2_with_one_line(args: list[str], needle: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, *ARGS, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err
