"""The Python API and real inputs/outputs: a saved tiny checkpoint runs from ``--checkpoint`` alone, reads token
ids from files or text, saves logits and hidden states that are bit-identical across schedules, and
``rmtsched.load(...).forward`` gives the same tensors without the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from cli_helpers import run_main

import rmtsched
from rmtsched.backends.torch import build_model
from rmtsched.backends.torch import session as session_module
from rmtsched.backends.torch.checkpoint import save_checkpoint
from rmtsched.errors import RmtschedError
from rmtsched.specs.model import ModelSpec

SPEC = ModelSpec(name="api-tiny", family="armt", num_layers=3, d_model=16, num_heads=4, num_kv_heads=2, mlp_dim=24,
                 vocab_size=50, segment_len=5, mem_tokens=2, mem_key_dim=4, dtype_bytes=4)
IDS = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 32, 38, 46, 26, 43, 38, 32, 7]  # 19 tokens: 4 segments, short last
SCHEDULES = [("sequential", []), ("diagonal", []), ("diagonal", ["--max-width", "2"]), ("greedy", []),
             ("pipelined", ["--devices", "3", "--in-process"])]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(build_model(SPEC, seed=7), directory)
    return directory


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text(" ".join(map(str, IDS[:10])) + "\n" + " ".join(map(str, IDS[10:])) + "\n")
    return path


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    code, out, err = run_main(capsys, "run", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_checkpoint_run_saves_logits_bit_identical_across_schedules(
    checkpoint: Path, tokens_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = []
    for index, (name, extra) in enumerate(SCHEDULES):
        out = tmp_path / f"out{index}.safetensors"
        record = run_json(capsys, "--checkpoint", str(checkpoint), "--tokens", str(tokens_file), "--schedule", name,
                          "--save-outputs", str(out), *extra)
        assert record["seq_len"] == len(IDS) and record["segments"] == 4 and record["saved_outputs"] == str(out)
        assert record["weight_sources"] == {"checkpoint": sorted(build_model(SPEC, seed=0).params)}
        assert record["input"] == {"source": f"tokens file {str(tokens_file)!r}", "batch": 1, "tokens": len(IDS),
                                   "available_tokens": len(IDS), "truncated": False}
        saved.append(safetensors.torch.load_file(str(out)))
    logits, hidden = saved[0]["logits"], saved[0]["hidden"]
    assert logits.shape == (1, len(IDS), SPEC.vocab_size) and hidden.shape == (1, len(IDS), SPEC.d_model)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    for other in saved[1:]:
        assert torch.equal(other["logits"], logits) and torch.equal(other["hidden"], hidden)
    # The LM head, read from the checkpoint file itself and applied in fp64: logits = hidden @ W^T.
    head = safetensors.torch.load_file(str(checkpoint / "model.safetensors"))["lm_head"].double()
    assert torch.allclose(logits.double(), hidden.double() @ head.T, rtol=0, atol=1e-5)


def test_load_forward_matches_the_cli_and_every_schedule(checkpoint: Path, tokens_file: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.safetensors"
    run_json(capsys, "--checkpoint", str(checkpoint), "--tokens", str(tokens_file), "--schedule", "diagonal",
             "--save-outputs", str(out))
    model = rmtsched.load(checkpoint)
    assert model.spec == SPEC and set(model.weight_sources.values()) == {"checkpoint"}
    results = [model.forward(IDS, schedule) for schedule in ("sequential", "diagonal", "greedy")]
    results.append(model.forward(torch.tensor([IDS]), "diagonal", max_width=2))
    cli = safetensors.torch.load_file(str(out))
    for result in results:
        assert torch.equal(result.logits, cli["logits"]) and torch.equal(result.hidden, cli["hidden"])


def test_seq_len_defaults_to_the_input_and_truncates_with_a_note(
    checkpoint: Path, tokens_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--checkpoint", str(checkpoint), "--tokens", str(tokens_file), "--schedule", "diagonal"]
    full = run_json(capsys, *args)
    cut = run_json(capsys, *args, "--seq-len", "12")
    assert cut["seq_len"] == 12 and cut["input"]["truncated"] and cut["input"]["available_tokens"] == len(IDS)
    assert cut["output_sha256"] != full["output_sha256"]
    code, out, _ = run_main(capsys, "run", *args, "--seq-len", "12")
    assert code == 0 and f"truncated from {len(IDS)} to --seq-len 12" in out
    code, _, err = run_main(capsys, "run", *args, "--seq-len", "20")
    assert code == 2 and f"--seq-len 20 is longer than the {len(IDS)} tokens" in err


def test_npy_batch_input_and_its_hash_match_the_text_file(checkpoint: Path, tokens_file: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    single = tmp_path / "ids.npy"
    np.save(single, np.array(IDS, dtype=np.int32))
    base = ["--checkpoint", str(checkpoint), "--schedule", "diagonal"]
    from_text = run_json(capsys, *base, "--tokens", str(tokens_file))
    assert run_json(capsys, *base, "--tokens", str(single))["output_sha256"] == from_text["output_sha256"]
    batch = tmp_path / "batch.npy"
    np.save(batch, np.array([IDS, IDS[::-1]], dtype=np.int64))
    record = run_json(capsys, *base, "--tokens", str(batch))
    assert record["input"]["batch"] == 2 and record["seq_len"] == len(IDS)
    forward = rmtsched.load(checkpoint).forward(np.array([IDS, IDS[::-1]]))
    assert forward.logits.shape == (2, len(IDS), SPEC.vocab_size)
    # Rows of a batch are not bit-identical to single runs (GEMMs over B rows), only close.
    assert torch.allclose(forward.logits[0], rmtsched.load(checkpoint).forward(IDS).logits[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("content", "message"),
    [("3 4 50", "token id 50: expected ids in [0, 50)"), ("3 -1", "token id -1"), ("3 x4", "'x4'"),
     ("", "holds no tokens")],
)
def test_bad_token_files_are_one_line_errors(checkpoint: Path, tmp_path: Path, content: str, message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(content)
    code, out, err = run_main(capsys, "run", "--checkpoint", str(checkpoint), "--tokens", str(path), "--schedule",
                              "diagonal")
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1


def test_bad_npy_files_are_refused(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, array, message in [("f.npy", np.ones(4), "float64 values"), ("3d.npy", np.ones((1, 2, 3), int),
                                                                           "expected [N] or [B, N]")]:
        np.save(tmp_path / name, array)
        code, _, err = run_main(capsys, "verify", "--checkpoint", str(checkpoint), "--tokens", str(tmp_path / name))
        assert code == 2 and message in err


def test_text_input_uses_the_checkpoints_tokenizer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    directory = tmp_path / "with-tokenizer"
    save_checkpoint(build_model(SPEC, seed=7), directory)
    text = tmp_path / "prompt.txt"
    text.write_text("the cat sat on the mat and the dog sat on the log")
    code, _, err = run_main(capsys, "run", "--checkpoint", str(directory), "--text", str(text), "--schedule",
                            "diagonal")
    assert code == 2 and "tokenizer.json" in err and "does not exist" in err
    words = sorted(set(text.read_text().split()))
    vocab = {"[UNK]": 0, **{word: index + 1 for index, word in enumerate(words)}}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.save(str(directory / "tokenizer.json"))
    record = run_json(capsys, "--checkpoint", str(directory), "--text", str(text), "--schedule", "diagonal")
    ids = tmp_path / "ids.txt"
    ids.write_text(" ".join(str(vocab[word]) for word in text.read_text().split()))
    assert record["seq_len"] == 13 and record["input"]["source"] == f"text file {str(text)!r}"
    assert run_json(capsys, "--checkpoint", str(directory), "--tokens", str(ids), "--schedule", "greedy")[
        "output_sha256"] == record["output_sha256"]


def test_save_outputs_path_is_checked_before_the_run(checkpoint: Path, tokens_file: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(session_module, "build_model", _must_not_run)
    monkeypatch.setattr(session_module, "load_checkpoint_model", _must_not_run)
    code, _, err = run_main(capsys, "run", "--model", "armt-tiny", "--seq-len", "8", "--schedule", "diagonal",
                            "--save-outputs", str(tmp_path / "missing" / "out.safetensors"))
    assert code == 2 and "does not exist" in err and "missing" in err
    code, _, err = run_main(capsys, "run", "--checkpoint", str(checkpoint), "--tokens", str(tokens_file),
                            "--schedule", "pipelined", "--devices", "3", "--save-outputs", str(tmp_path / "o"))
    assert code == 2 and "needs the run in this process" in err


def _must_not_run(*args: object, **kwargs: object) -> None:
    raise AssertionError("the model was loaded before the output path was checked")


def test_text_output_says_where_weights_and_input_came_from(checkpoint: Path, tokens_file: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "run", "--checkpoint", str(checkpoint), "--tokens", str(tokens_file),
                            "--schedule", "diagonal")
    assert code == 0
    assert f"input: {len(IDS)} token ids x batch 1 from tokens file" in out
    assert f"weights (checkpoint {checkpoint}, armt_variant paper) checkpoint: attn_norm, embed, final_norm" in out
    code, out, _ = run_main(capsys, "run", "--model", "armt-tiny", "--seq-len", "8", "--schedule", "diagonal")
    assert "input: 8 token ids x batch 1 from random ids (seed 0)" in out and "(no checkpoint" in out
    assert "seed: attn_norm, embed" in out


def test_loader_gets_the_spec_overrides_and_init_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new loader signature: spec (None: the checkpoint's), run choices as overrides, seeded memory."""
    calls = []

    def fake_loader(path, spec=None, **kwargs):
        calls.append((path, spec, kwargs))
        model = build_model(SPEC, seed=1)
        model.weight_sources = {**dict.fromkeys(model.params, "checkpoint"), "mem_wq": "seed"}
        return model

    monkeypatch.setattr(session_module, "load_checkpoint_model", fake_loader)
    model = rmtsched.load(tmp_path, segment_len=7, armt_variant="normalized", init_memory="seed", seed=3)
    path, spec, kwargs = calls[-1]
    assert path == tmp_path and spec is None and kwargs["seed"] == 3 and kwargs["init_memory"] == "seed"
    assert kwargs["spec_overrides"] == {"segment_len": 7, "armt_variant": "normalized"}
    assert model.weight_sources["mem_wq"] == "seed"
    record = rmtsched.run(rmtsched.RunConfig(checkpoint=tmp_path, model="armt-tiny", seq_len=6), warmup=False)
    assert calls[-1][1].name == "armt-tiny" and "spec_overrides" not in calls[-1][2]
    assert record["weight_sources"]["seed"] == ["mem_wq"] and "mem_wq" not in record["weight_sources"]["checkpoint"]


def test_generate_delegates_to_the_backend(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_generate(model, prompt_ids, max_new_tokens, schedule="diagonal", eos_token_id=None):
        seen.update(model=model, prompt=prompt_ids, k=max_new_tokens, schedule=schedule, eos=eos_token_id)
        return "result"

    module = types.ModuleType("rmtsched.backends.torch.generate")
    module.generate = fake_generate
    monkeypatch.setitem(sys.modules, "rmtsched.backends.torch.generate", module)
    model = rmtsched.load(checkpoint)
    assert model.generate(IDS[:7], 4, schedule="greedy", eos_token_id=2) == "result"
    assert seen["model"] is model.backend and seen["prompt"].tolist() == [IDS[:7]]
    assert seen["prompt"].dtype == torch.int64
    assert (seen["k"], seen["schedule"], seen["eos"]) == (4, "greedy", 2)
    with pytest.raises(RmtschedError, match="token id 99"):
        model.generate([1, 99], 2)


def test_api_run_and_verify_return_the_cli_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = rmtsched.RunConfig(model="armt-tiny", seq_len=12, segment_len=4, mem_tokens=2)
    record = rmtsched.run(config, schedule="diagonal")
    cli = run_json(capsys, "--model", "armt-tiny", "--seq-len", "12", "--segment-len", "4", "--mem-tokens", "2",
                   "--schedule", "diagonal")
    assert record.keys() == cli.keys() and record["output_sha256"] == cli["output_sha256"]
    report = rmtsched.verify(model="armt-tiny", seq_len=12, segment_len=4, mem_tokens=2,
                             save_outputs_to=tmp_path / "verify.safetensors")
    assert report["ok"] and all(row["bitwise_equal"] for row in report["schedules"])
    saved = safetensors.torch.load_file(str(tmp_path / "verify.safetensors"))
    forward = rmtsched.load("armt-tiny", segment_len=4, mem_tokens=2).forward(torch.randint(
        0, 1024, (1, 12), generator=torch.Generator().manual_seed(0)), "greedy")  # run's random ids, seed 0
    assert torch.equal(saved["logits"], forward.logits) and torch.equal(saved["hidden"], forward.hidden)
    assert rmtsched.load("armt-tiny", segment_len=4).spec.segment_len == 4
    seeded = rmtsched.load(SPEC, dtype="fp64", seed=7)
    assert seeded.backend.dtype == torch.float64 and set(seeded.weight_sources.values()) == {"seed"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [({}, "no model given"), ({"model": "armt-tiny"}, "no input"),
     ({"model": "armt-tiny", "seq_len": 0}, "seq_len must be a positive integer, got 0"),
     ({"model": "armt-tiny", "seq_len": 4, "dtype": "bf16"}, "dtype bf16 is not supported on cpu"),
     ({"model": "armt-tiny", "seq_len": 4, "armt_variant": "fast"}, "unknown armt_variant 'fast'"),
     ({"model": "armt-tiny", "seq_len": 4, "init_memory": "seed"}, "init_memory 'seed' applies to a checkpoint"),
     ({"model": "armt-tiny", "text": "t.txt"}, "needs a checkpoint directory holding tokenizer.json"),
     ({"model": "armt-tiny", "tokens": "a", "text": "b", "checkpoint": "c"}, "expected one input")],
)
def test_bad_run_configs_name_the_value(fields: dict, message: str) -> None:
    with pytest.raises(RmtschedError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rmtsched.run(**fields)


def test_import_rmtsched_stays_torch_free() -> None:
    code = ("import sys, rmtsched; assert 'torch' not in sys.modules; rmtsched.RunConfig; "
            "assert 'torch' not in sys.modules; rmtsched.load; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.distributed
def test_a_checkpoint_runs_on_several_processes_with_the_same_hash(checkpoint: Path, tokens_file: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--checkpoint", str(checkpoint), "--tokens", str(tokens_file), "--schedule", "pipelined", "--devices", "3",
            "--threads-per-process", "1"]
    here = run_json(capsys, *base, "--in-process")
    ranks = run_json(capsys, *base)
    assert ranks["processes"] == 3 and ranks["output_sha256"] == here["output_sha256"]
    assert ranks["weight_sources"] == here["weight_sources"] and ranks["input"] == here["input"]
