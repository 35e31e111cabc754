"""``rmtsched simulate``: tables, JSON records, pictures, memory verdicts and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import run_main

from rmtsched.specs.hardware import load_hardware_spec

REQUIRED_KEYS = {
    "schedule", "model", "hardware", "seq_len", "segment_len", "layers", "segments", "cells", "steps",
    "makespan_s", "utilization", "bubble_fraction", "peak_memory_bytes", "fits_in_memory",
}


def simulate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run_main(capsys, "simulate", *args)


def test_all_prints_a_table_with_speedups(capsys) -> None:
    code, out, _ = simulate(capsys, "--model", "armt-llama-1b", "--seq-len", "16384", "--hardware", "h100-sxm",
                            "--schedule", "all")
    assert code == 0
    assert "16,384 tokens = 16 segments" in out
    for word in ("sequential", "diagonal", "greedy", "pipelined", "full-attention", "vs sequential", "vs full-attn",
                 "runtime eager", "KV cache"):
        assert word in out


@pytest.mark.parametrize("engine", ["des", "analytic"])
def test_all_json_lists_every_schedule_with_speedups(capsys, engine: str) -> None:
    code, out, _ = simulate(capsys, "--model", "armt-tiny", "--seq-len", "1000", "--hardware", "cpu-generic",
                            "--schedule", "all", "--devices", "2", "--engine", engine, "--json")
    records = json.loads(out)
    assert code == 0
    assert [r["schedule"] for r in records] == ["sequential", "diagonal", "greedy", "pipelined"]
    assert [r["engine"] for r in records] == ([engine] * 2 + ["des", engine])  # greedy has no closed form
    for record in records:
        assert set(record) >= REQUIRED_KEYS | {"speedup_vs_sequential", "speedup_vs_full_attention"}
        assert (record["layers"], record["segments"], record["cells"], record["seq_len"]) == (4, 16, 64, 1000)
        assert record["speedup_vs_full_attention"] == pytest.approx(
            record["full_attention_makespan_s"] / record["makespan_s"])
    assert records[0]["speedup_vs_sequential"] == 1.0
    assert records[1]["speedup_vs_sequential"] > 1.0  # diagonal batching amortises launches
    assert records[2]["makespan_s"] == records[1]["makespan_s"]  # greedy without a cap runs the diagonal steps
    assert records[3]["devices"] == 2 and records[3]["bubble_fraction"] > 0


def test_engines_agree_through_the_cli(capsys) -> None:
    args = ["--model", "armt-small", "--seq-len", "5000", "--hardware", "h100-sxm", "--schedule", "all",
            "--devices", "4", "--max-width", "5", "--json"]
    _, des_out, _ = simulate(capsys, *args, "--engine", "des")
    _, closed_out, _ = simulate(capsys, *args, "--engine", "analytic")
    for event, closed in zip(json.loads(des_out), json.loads(closed_out), strict=True):
        assert event["makespan_s"] == pytest.approx(closed["makespan_s"], rel=1e-9)
        assert event["peak_memory_bytes"] == pytest.approx(closed["peak_memory_bytes"], rel=1e-9)


def test_single_schedule_json_is_a_list_of_one_and_overrides_apply(capsys) -> None:
    code, out, _ = simulate(capsys, "--model", "rmt-tiny", "--seq-len", "300", "--segment-len", "32",
                            "--mem-tokens", "4", "--hardware", "a100-80gb", "--schedule", "diagonal", "--json")
    [record] = json.loads(out)
    assert code == 0 and set(record) >= REQUIRED_KEYS
    assert (record["segment_len"], record["mem_tokens"], record["segments"]) == (32, 4, 10)
    assert record["steps"] == record["cells"] == 40  # global memory: a diagonal degrades to a chain
    assert record["speedup_vs_sequential"] is None and record["runtime"] == "eager"


def test_batch_size_and_runtime_change_the_prediction(capsys) -> None:
    args = ["--model", "armt-llama-1b", "--seq-len", "8192", "--hardware", "h200", "--schedule", "diagonal", "--json"]
    [one] = json.loads(simulate(capsys, *args)[1])
    [eight] = json.loads(simulate(capsys, *args, "--batch-size", "8")[1])
    [graphs] = json.loads(simulate(capsys, *args, "--runtime", "graphs")[1])
    assert eight["batch_size"] == 8 and eight["memory_state_bytes"] == 8 * one["memory_state_bytes"]
    assert one["makespan_s"] < eight["makespan_s"] < 8 * one["makespan_s"]
    assert graphs["runtime"] == "graphs" and graphs["makespan_s"] < one["makespan_s"]
    # ARMT's state: 16 layers x (phi x d + phi) bf16 values, against full attention's K and V of every token
    assert one["memory_state_bytes"] == 16 * (384 * 2048 + 384) * 2
    assert one["full_attention_kv_cache_bytes"] == 16 * 2 * 8192 * 512 * 2


def test_a_model_that_does_not_fit_is_reported(capsys, tmp_path: Path) -> None:
    small = load_hardware_spec("h100-sxm").replace(name="h100-tiny-memory", memory_bytes=5e9)
    path = tmp_path / "small.json"
    small.save(path)
    code, out, err = simulate(capsys, "--model", "armt-llama-3b", "--seq-len", "8192", "--hardware", str(path),
                              "--schedule", "all", "--json")
    records = json.loads(out)
    assert code == 0
    assert [r["fits_in_memory"] for r in records] == [False] * 4
    assert records[0]["hardware"] == "h100-tiny-memory"
    assert "fits_in_memory: false" in err
    code, _, err = simulate(capsys, "-q", "--model", "armt-llama-3b", "--seq-len", "8192", "--hardware", str(path),
                            "--schedule", "diagonal", "--json")
    assert code == 0 and err == "", "-q hides warnings"


def test_model_and_hardware_load_from_json_files(capsys, tmp_path: Path) -> None:
    model = tmp_path / "mine.json"
    model.write_text(json.dumps({"family": "armt", "num_layers": 2, "d_model": 32, "num_heads": 2, "num_kv_heads": 1,
                                 "mlp_dim": 64, "vocab_size": 100, "segment_len": 16, "mem_tokens": 2}))
    code, out, _ = simulate(capsys, "--model", str(model), "--seq-len", "64", "--hardware", "cpu-generic",
                            "--schedule", "sequential", "--json")
    assert code == 0 and json.loads(out)[0]["model"] == "mine"


def test_trace_and_plot_files_are_written_per_schedule(capsys, tmp_path: Path) -> None:
    code, _, _ = simulate(capsys, "--model", "armt-tiny", "--seq-len", "500", "--hardware", "cpu-generic",
                          "--schedule", "all", "--devices", "2", "--trace", str(tmp_path / "t.json"),
                          "--plot", str(tmp_path / "g.png"))
    assert code == 0
    for name in ("sequential", "diagonal", "greedy", "pipelined"):
        assert json.loads((tmp_path / f"t.{name}.json").read_text())["traceEvents"]
        assert (tmp_path / f"g.{name}.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "armt-nope", "--seq-len", "10", "--hardware", "h100-sxm", "--schedule", "all"], "unknown model"),
        (["--model", "armt-tiny", "--seq-len", "10", "--hardware", "tpu-v9", "--schedule", "all"], "unknown hardware"),
        (["--model", "armt-tiny", "--seq-len", "0", "--hardware", "h100-sxm", "--schedule", "all"], "positive integer"),
        (["--model", "armt-tiny", "--seq-len", "10", "--hardware", "h100-sxm", "--schedule", "zigzag"], "zigzag"),
        (["--model", "armt-tiny", "--seq-len", "10", "--hardware", "h100-sxm", "--schedule", "greedy",
          "--runtime", "jit"], "no runtime 'jit'"),
        (["--model", "armt-tiny", "--seq-len", "10", "--hardware", "h100-sxm", "--schedule", "greedy",
          "--batch-size", "0"], "positive integer"),
        (["--model", "armt-tiny", "--seq-len", "10", "--hardware", "h100-sxm", "--schedule", "all",
          "--devices", "9"], "has 8 devices"),
        (["--model", "armt-tiny", "--seq-len", "10", "--hardware", "h100-sxm", "--schedule", "sequential",
          "--devices", "2"], "one device"),
        (["--model", "armt-tiny", "--seq-len", "10", "--hardware", "h100-sxm", "--schedule", "all",
          "--engine", "analytic", "--trace", "x.json"], "des engine"),
    ],
)
def test_bad_input_is_one_line_on_stderr(capsys, args: list[str], message: str) -> None:
    code, _, err = simulate(capsys, *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
