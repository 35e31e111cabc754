"""The backend, calibrate and compare on a CUDA device (skipped, with the reason, where torch sees none).

The CPU contract is bit-exactness; on CUDA it is a stated tolerance: every schedule's outputs lie within
``FP32_TOLERANCE`` of the sequential run's in fp32 (TF32 is off, torch's default for matmuls), whatever
the row-GEMM mode. bf16 is covered by test_backend_models.py's CUDA test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from backend_helpers import build_model, execute, random_inputs
from cli_helpers import run_main

from rmtsched.sched import graph_for_tokens, make_schedule
from rmtsched.specs.hardware import load_hardware_spec
from rmtsched.specs.model import ModelSpec

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SPEC = ModelSpec(name="m", family="armt", num_layers=4, d_model=64, num_heads=4, num_kv_heads=2, mlp_dim=96,
                 vocab_size=101, segment_len=16, mem_tokens=4, mem_key_dim=8, dpfp_nu=3, dtype_bytes=4)
FP32_TOLERANCE = 1e-4  # outputs are O(1): RMS-normed hidden states through a random unembedding


@pytest.mark.parametrize("gemm", ["auto", "rows", "batched"])
@pytest.mark.parametrize("family", ["armt", "rmt"])
def test_fp32_schedules_match_sequential_within_tolerance(family: str, gemm: str) -> None:
    spec = SPEC.replace(family=family)
    model = build_model(spec, seed=3, dtype=torch.float32, device="cuda", matmul=gemm)
    inputs = random_inputs(spec, 2, 7 * spec.segment_len + 5, seed=4).cuda()
    graph = graph_for_tokens(spec, inputs.shape[1])
    reference = execute(model, inputs, make_schedule(graph, "sequential")).outputs
    for name in ("diagonal", "greedy"):
        outputs = execute(model, inputs, make_schedule(graph, name)).outputs
        worst = max((a - b).abs().max().item() for a, b in zip(reference, outputs, strict=True))
        assert outputs[0].device.type == "cuda"
        assert worst <= FP32_TOLERANCE, f"{family}/{gemm}/{name}: max |diff| {worst:.3e}"


def test_calibrate_and_compare_on_cuda(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    hardware = tmp_path / "hw.json"
    code, _, err = run_main(capsys, "calibrate", "--device", "cuda", "--quick", "--no-progress",
                            "--out", str(hardware))
    assert code == 0, err
    spec = load_hardware_spec(hardware)
    assert spec.name == "calibrated-cuda-bf16" and spec.matmul_flops_per_s["bf16"] > 1e11
    code, out, err = run_main(capsys, "compare", "--model", "armt-tiny", "--seq-len", "512", "--hardware",
                              str(hardware), "--device", "cuda", "--repeat", "1", "--no-progress", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert {"sequential", "diagonal"} <= {row["schedule"] for row in rows}
    assert all(row["measured_s"] > 0 and row["predicted_s"] > 0 for row in rows)


def test_run_on_cuda_reports_device_memory(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "run", "--model", "armt-tiny", "--seq-len", "300", "--schedule", "diagonal",
                              "--device", "cuda", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["peak_memory_kind"] == "cuda_max_allocated" and record["peak_memory_bytes"] > 0
