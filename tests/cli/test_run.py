"""``rmtsched run``: timing, tokens/s, peak memory and an output hash that shows schedules agree bit for bit."""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_main

TINY = ["--model", "armt-tiny", "--segment-len", "8", "--mem-tokens", "2"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    return run_main(capsys, "run", *args)


def _json_run(args: list[str], capsys) -> dict:
    code, out, err = run_cli([*TINY, "--json", *args], capsys)
    assert code == 0, err
    return json.loads(out)


def test_every_schedule_prints_the_same_output_hash(capsys: pytest.CaptureFixture[str]) -> None:
    records = [
        _json_run(["--seq-len", "37", "--schedule", name, *extra], capsys)
        for name, extra in [("sequential", []), ("diagonal", []), ("diagonal", ["--max-width", "2"]),
                            ("pipelined", ["--devices", "4", "--in-process"]), ("greedy", [])]
    ]
    assert len({r["output_sha256"] for r in records}) == 1
    assert [r["steps"] for r in records[:2]] == [4 * 5, 4 + 5 - 1]
    diagonal = records[1]
    assert diagonal["segments"] == 5 and diagonal["tokens_per_s"] == pytest.approx(37 / diagonal["wall_s"])
    assert diagonal["peak_memory_bytes"] > 0 and diagonal["peak_memory_kind"] == "process_peak_rss"


def test_seed_and_dtype_change_the_hash(capsys: pytest.CaptureFixture[str]) -> None:
    base = _json_run(["--seq-len", "20", "--schedule", "diagonal"], capsys)
    assert _json_run(["--seq-len", "20", "--schedule", "diagonal", "--seed", "1"], capsys)["output_sha256"] != (
        base["output_sha256"]
    )
    wide = _json_run(["--seq-len", "20", "--schedule", "diagonal", "--dtype", "fp64"], capsys)
    assert wide["output_sha256"] != base["output_sha256"] and wide["dtype"] == "fp64"


def test_text_output_reports_median_of_repeats(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli([*TINY, "--seq-len", "16", "--schedule", "diagonal", "--repeat", "3"], capsys)
    assert code == 0
    assert "(median of 3)" in out and "tokens/s" in out and "peak memory" in out
    assert out.splitlines()[-1].startswith("output_sha256 ") and len(out.splitlines()[-1].split()[1]) == 64


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "armt-tiny", "--seq-len", "0", "--schedule", "diagonal"], "expected a positive integer, got 0"),
        (["--model", "no-such-model", "--seq-len", "8", "--schedule", "diagonal"], "unknown model 'no-such-model'"),
        (["--model", "armt-tiny", "--seq-len", "8", "--schedule", "zigzag"], "unknown scheduler 'zigzag'"),
        (["--model", "armt-tiny", "--seq-len", "8", "--schedule", "diagonal", "--dtype", "bf16"],
         "dtype bf16 is not supported on cpu"),
        (["--model", "armt-tiny", "--seq-len", "8", "--schedule", "diagonal", "--dtype", "fp8"], "unknown dtype"),
        (["--model", "armt-tiny", "--seq-len", "8", "--schedule", "diagonal", "--device", "tpu"], "unknown device"),
        (["--model", "armt-tiny", "--seq-len", "8", "--schedule", "sequential", "--devices", "2"],
         "runs on one device"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args, message, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(args, capsys)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_cuda_without_a_gpu_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    code, _, err = run_cli(["--model", "armt-tiny", "--seq-len", "8", "--schedule", "diagonal", "--device", "cuda",
                            "--dtype", "bf16"], capsys)
    assert code == 2 and "no CUDA device" in err


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--seq-len", "8", "--schedule", "diagonal", "--checkpoint", str(tmp_path / "absent")]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "absent" in err and len(err.strip().splitlines()) == 1


def test_cuda_graphs_need_a_cuda_run_in_this_process(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["--model", "armt-tiny", "--seq-len", "64", "--schedule", "diagonal", "--cuda-graphs"],
                             capsys)
    assert code == 2 and out == "" and "cuda_graphs needs a schedule run in this process on --device cuda" in err
    record = _json_run(["--model", "armt-tiny", "--seq-len", "64", "--schedule", "diagonal"], capsys)
    assert record["cuda_graphs"] is False
