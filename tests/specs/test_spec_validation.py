"""Spec values that would give garbage (NaN outputs, ``Infinity`` in JSON) or a crash are refused by name."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from cli_helpers import run_main

from rmtsched.errors import SpecError
from rmtsched.specs.hardware import load_hardware_spec
from rmtsched.specs.model import ModelSpec, load_model_spec

TINY = load_model_spec("armt-tiny")
CPU = load_hardware_spec("cpu-generic")


@pytest.mark.parametrize("field", ["rope_theta", "rms_norm_eps"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1.0, 0.0, True, "1e4", None])
def test_model_floats_must_be_positive_and_finite(field: str, value: object) -> None:
    with pytest.raises(SpecError, match=f"{field} must be a positive.* number, got {value!r}"):
        TINY.replace(**{field: value})


@pytest.mark.parametrize("field", ["num_layers", "d_model", "segment_len", "dtype_bytes", "mem_tokens"])
@pytest.mark.parametrize("value", [True, False, 2.0, "4", 2**31, 10**400])
def test_model_integers_are_not_bools_or_floats(field: str, value: object) -> None:
    with pytest.raises(SpecError, match=f"{field} must be a .*integer.*, got {value!r}"):
        TINY.replace(**{field: value})


def test_valid_model_floats_pass() -> None:
    assert TINY.replace(rope_theta=500000, rms_norm_eps=1e-6).rope_theta == 500000


@pytest.mark.parametrize("field", ["launch_overhead_s", "link_latency_s", "cell_overhead_s", "matmul_half_flops"])
@pytest.mark.parametrize("value", [math.inf, math.nan, -1.0, True])
def test_hardware_overheads_must_be_finite(field: str, value: object) -> None:
    with pytest.raises(SpecError, match=f"{field} must be a finite number >= 0, got {value!r}"):
        CPU.replace(**{field: value})


@pytest.mark.parametrize("field", ["vector_flops_per_s", "memory_bytes", "memory_bandwidth_bytes_per_s"])
def test_hardware_rates_must_be_finite(field: str) -> None:
    with pytest.raises(SpecError, match=f"{field} must be a positive number, got inf"):
        CPU.replace(**{field: math.inf})
    with pytest.raises(SpecError, match="num_devices must be a positive integer, got True"):
        CPU.replace(num_devices=True)


def test_an_infinite_link_is_allowed_and_saved_as_strict_json(tmp_path: Path) -> None:
    spec = CPU.replace(link_bandwidth_bytes_per_s=math.inf)
    spec.save(tmp_path / "hw.json")
    text = (tmp_path / "hw.json").read_text()
    assert "Infinity" not in text and "link_bandwidth_bytes_per_s" not in json.loads(text)
    assert load_hardware_spec(tmp_path / "hw.json") == spec


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\xff\xfe{\x00}\x00", r"not valid JSON \(UTF-8 text expected\)"),
        (b'{"name": "x", "rope_theta": NaN}', "NaN is not a JSON number"),
        (b'{"name": "x", "launch_overhead_s": Infinity}', "Infinity is not a JSON number"),
        (b"[" * 100000, "not valid JSON"),
    ],
    ids=["utf16", "nan", "infinity", "deep"],
)
def test_spec_files_that_are_not_strict_utf8_json_are_refused(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "spec.json"
    path.write_bytes(content)
    for load in (load_model_spec, load_hardware_spec):
        with pytest.raises(SpecError, match=words):
            load(path)


def test_simulate_refuses_an_infinite_overhead_instead_of_printing_infinity(tmp_path: Path, capsys) -> None:
    data = CPU.to_dict() | {"launch_overhead_s": 1e400}  # json.dumps writes Infinity; the loader refuses it
    (tmp_path / "hw.json").write_text(json.dumps(data))
    code, out, err = run_main(capsys, "simulate", "--model", "armt-tiny", "--seq-len", "256", "--hardware",
                              str(tmp_path / "hw.json"), "--schedule", "diagonal", "--json")
    assert (code, out) == (2, "") and "Infinity is not a JSON number" in err and err.count("\n") == 1


def test_a_boolean_layer_count_in_a_spec_file_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "m.json").write_text(json.dumps(TINY.to_dict() | {"num_layers": True}))
    code, _, err = run_main(capsys, "schedule", "--layers", "1", "--segments", "1")  # sanity: the CLI runs
    assert code == 0
    code, out, err = run_main(capsys, "simulate", "--model", str(tmp_path / "m.json"), "--seq-len", "256",
                              "--hardware", "cpu-generic", "--schedule", "diagonal")
    assert (code, out) == (2, "") and "num_layers must be a positive integer (at most 2,147,483,647), got True" in err


def test_model_spec_from_dict_round_trips() -> None:
    assert ModelSpec.from_dict(TINY.to_dict()) == TINY


@pytest.mark.parametrize(("name", "factor", "tied"),
                         [("armt-llama-1b", 32.0, True), ("rmt-llama-3b", 32.0, True), ("armt-llama-8b", 8.0, False)])
def test_llama3_presets_carry_the_published_rope_scaling_and_head(name: str, factor: float, tied: bool) -> None:
    """Llama-3.2-1B/3B and Llama-3.1-8B configs: rope_theta 500000, rope_scaling llama3 with these factors;
    tie_word_embeddings true for 1B and 3B."""
    spec = load_model_spec(name)
    assert spec.tie_word_embeddings is tied
    assert spec.rope_theta == 500000.0 and spec.rope_type == "llama3"
    assert (spec.rope_factor, spec.rope_low_freq_factor, spec.rope_high_freq_factor,
            spec.rope_original_max_position) == (factor, 1.0, 4.0, 8192)
