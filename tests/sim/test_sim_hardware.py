"""Hardware specs: published presets, one JSON format for presets and calibrated files, clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rmtsched.errors import SpecError
from rmtsched.specs.hardware import HardwareSpec, available_hardware_specs, load_hardware_spec
from rmtsched.specs.model import load_model_spec


def test_presets_carry_the_vendors_published_figures() -> None:
    h100, h200, a100 = (load_hardware_spec(name) for name in ("h100-sxm", "h200", "a100-80gb"))
    assert h100.matmul_peak_flops_per_s(2) == 989e12 and h100.memory_bandwidth_bytes_per_s == 3.35e12
    assert h100.memory_bytes == 80e9 and h100.link_bandwidth_bytes_per_s == 900e9
    assert h200.matmul_peak_flops_per_s(2) == 989e12 and h200.memory_bandwidth_bytes_per_s == 4.8e12
    assert h200.memory_bytes == 141e9
    assert a100.matmul_peak_flops_per_s(2) == 312e12 and a100.memory_bytes == 80e9
    assert a100.link_bandwidth_bytes_per_s == 600e9
    assert "cpu-generic" in available_hardware_specs()
    for spec in (h100, h200, a100):
        assert "datasheet" in spec.notes


@pytest.mark.parametrize("name", available_hardware_specs())
def test_json_round_trip_through_a_file(tmp_path: Path, name: str) -> None:
    spec = load_hardware_spec(name)
    path = tmp_path / f"{name}.json"
    spec.save(path)
    assert load_hardware_spec(path) == spec
    assert HardwareSpec.from_dict(json.loads(spec.to_json())) == spec


def test_a_calibrated_file_needs_only_the_required_fields(tmp_path: Path) -> None:
    path = tmp_path / "measured-box.json"
    path.write_text(json.dumps({
        "matmul_flops_per_s": {"fp32": 2e11}, "vector_flops_per_s": 1e10, "memory_bandwidth_bytes_per_s": 3e10,
        "memory_bytes": 8e9, "launch_overhead_s": 2e-5,
    }))
    spec = load_hardware_spec(path)
    assert spec.name == "measured-box" and spec.num_devices == 1 and spec.link_bandwidth_bytes_per_s == math.inf
    assert spec.transfer_time_s(1e9) == 0.0


def test_matmul_peak_by_dtype_name_or_size_and_missing_ones_refused() -> None:
    a100 = load_hardware_spec("a100-80gb")
    assert a100.matmul_peak_flops_per_s("tf32") == 156e12 and a100.matmul_peak_flops_per_s(4) == 19.5e12
    with pytest.raises(SpecError, match="fp8"):
        a100.matmul_peak_flops_per_s(1)
    with pytest.raises(SpecError, match="int4"):
        a100.matmul_peak_flops_per_s("int4")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"memory_bandwidth_bytes_per_s": 0}, "memory_bandwidth_bytes_per_s"),
        ({"matmul_efficiency": 1.5}, "matmul_efficiency"),
        ({"launch_overhead_s": -1.0}, "launch_overhead_s"),
        ({"num_devices": 0}, "num_devices"),
        ({"matmul_flops_per_s": {}}, "matmul_flops_per_s"),
        ({"matmul_flops_per_s": {"bf16": -5.0}}, "bf16"),
    ],
)
def test_bad_fields_name_the_value(change: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_hardware_spec("h100-sxm").replace(**change)


def test_unknown_names_and_bad_files_are_explained(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="unknown hardware 'tpu'"):
        load_hardware_spec("tpu")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_hardware_spec(bad)
    bad.write_text(json.dumps({"name": "x", "flops": 1}))
    with pytest.raises(SpecError, match="unknown hardware spec field"):
        load_hardware_spec(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(SpecError, match="JSON object"):
        load_hardware_spec(bad)


def test_model_specs_load_like_hardware_specs(tmp_path: Path) -> None:
    """One loader (``specs.presets``) serves both kinds: presets by name, files named after their stem."""
    with pytest.raises(SpecError, match="unknown model 'gpt'"):
        load_model_spec("gpt")
    fields = load_model_spec("armt-tiny").to_dict()
    del fields["name"]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(fields))
    assert load_model_spec(path) == load_model_spec("armt-tiny").replace(name="mine")
    path.write_text("[1, 2]")
    with pytest.raises(SpecError, match=r"model spec file .* must hold a JSON object, got list"):
        load_model_spec(path)
