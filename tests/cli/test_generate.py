"""``rmtsched generate``: end to end on a saved tiny checkpoint, with token ids or text, and its errors."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run_main

from rmtsched.backends.torch import build_model
from rmtsched.backends.torch.checkpoint import load_model, save_checkpoint
from rmtsched.backends.torch.generate import generate
from rmtsched.specs.model import ModelSpec

SPEC = ModelSpec(name="gen-tiny", family="armt", num_layers=3, d_model=32, num_heads=4, num_kv_heads=2, mlp_dim=48,
                 vocab_size=64, segment_len=6, mem_tokens=2, mem_key_dim=4, dtype_bytes=4)
PROMPT = [5, 9, 1, 33, 2, 7, 60, 4, 4, 18, 3, 12, 40, 8]  # 2 full segments and 2 tokens


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny ARMT with a word-level tokenizer (``w0`` .. ``w63``) beside it."""
    tokenizers = pytest.importorskip("tokenizers")
    directory = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(build_model(SPEC, seed=4), directory)
    model = tokenizers.models.WordLevel({f"w{i}": i for i in range(SPEC.vocab_size)}, unk_token="w0")
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def expected_tokens(directory: Path, prompt: list[list[int]], new_tokens: int) -> list[list[int]]:
    model = load_model(directory)
    return generate(model, torch.tensor(prompt), new_tokens, "sequential").tokens.tolist()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_token_file_prints_the_library_s_tokens_for_every_schedule(checkpoint: Path, tmp_path: Path, capsys) -> None:
    tokens = write(tmp_path / "prompt.txt", " ".join(map(str, PROMPT[:7])) + "\n" + " ".join(map(str, PROMPT[7:])))
    want = expected_tokens(checkpoint, [PROMPT], 5)
    for schedule in ("diagonal", "sequential", "greedy"):
        code, out, err = run_main(capsys, "generate", "--checkpoint", str(checkpoint), "--tokens", str(tokens),
                                  "--max-new-tokens", "5", "--schedule", schedule, "--no-warmup")
        assert code == 0, err
        assert out == f"tokens: {' '.join(map(str, want[0]))}\n"


def test_text_prompt_is_encoded_and_the_new_tokens_decoded(checkpoint: Path, tmp_path: Path, capsys) -> None:
    text = write(tmp_path / "prompt.txt", " ".join(f"w{i}" for i in PROMPT) + "\n")
    want = expected_tokens(checkpoint, [PROMPT], 4)[0]
    code, out, err = run_main(capsys, "generate", "--checkpoint", str(checkpoint), "--text", str(text),
                              "--max-new-tokens", "4")
    assert code == 0, err
    assert out.splitlines() == [f"tokens: {' '.join(map(str, want))}", "text: " + " ".join(f"w{i}" for i in want)]


def test_json_adds_the_timings(checkpoint: Path, tmp_path: Path, capsys) -> None:
    prompt = np.array([PROMPT, PROMPT[::-1]], dtype=np.int32)
    np.save(tmp_path / "prompt.npy", prompt)
    code, out, err = run_main(capsys, "generate", "--checkpoint", str(checkpoint), "--tokens",
                              str(tmp_path / "prompt.npy"), "--max-new-tokens", "3", "--json", "--no-warmup")
    assert code == 0, err
    record = json.loads(out)
    assert record["new_tokens"] == expected_tokens(checkpoint, prompt.tolist(), 3)
    assert record["batch"] == 2 and record["prompt_tokens"] == len(PROMPT) and record["segment_len"] == 6
    assert len(record["decode_s"]) == 2 and all(t > 0 for t in record["decode_s"])
    assert 0 < record["memory_s"] <= record["prefill_s"]
    assert record["prefill_tokens_per_s"] == pytest.approx(2 * len(PROMPT) / record["prefill_s"])
    assert record["decode_ms_per_token"] == pytest.approx(1e3 * statistics.median(record["decode_s"]))
    assert "text" not in record


def test_several_sequences_are_labelled(checkpoint: Path, tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "prompt.npy", np.array([PROMPT[:5], PROMPT[5:10]]))
    code, out, _ = run_main(capsys, "generate", "--checkpoint", str(checkpoint), "--tokens",
                            str(tmp_path / "prompt.npy"), "--max-new-tokens", "2")
    assert code == 0
    assert [line.split(":")[0] for line in out.splitlines()] == ["tokens[0]", "tokens[1]"]


def test_seeded_model_and_segment_override(checkpoint: Path, tmp_path: Path, capsys) -> None:
    tokens = write(tmp_path / "prompt.txt", " ".join(map(str, PROMPT)))
    code, out, err = run_main(capsys, "generate", "--model", "armt-tiny", "--segment-len", "4", "--mem-tokens", "2",
                              "--tokens", str(tokens), "--max-new-tokens", "3")
    assert code == 0, err
    assert out.startswith("tokens: ") and len(out.split()) == 4
    code, out_t4, err = run_main(capsys, "generate", "--checkpoint", str(checkpoint), "--segment-len", "4",
                                 "--tokens", str(tokens), "--max-new-tokens", "3", "--json")
    assert code == 0, err
    assert json.loads(out_t4)["segment_len"] == 4


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda d, t: ["--tokens", str(t / "missing.txt")], "does not exist"),
        (lambda d, t: ["--tokens", str(write(t / "p.txt", "1 2 x3"))], "holds 'x3': expected whitespace-separated"),
        (lambda d, t: ["--tokens", str(write(t / "p.txt", " \n"))], "holds no tokens: expected at least one"),
        (lambda d, t: ["--tokens", str(write(t / "p.txt", "1 64"))], "holds token id 64: expected ids in [0, 64)"),
        (lambda d, t: ["--tokens", str(write(t / "p.txt", "1 2")), "--schedule", "zigzag"], "unknown scheduler"),
        (lambda d, t: ["--text", str(write(t / "p.txt", "w1"))], "tokenizer.json' does not exist"),
        (lambda d, t: ["--tokens", str(write(t / "p.txt", "1")), "--mem-tokens", "3"], "but 3 in the spec_overrides"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(make_args, message: str, tmp_path: Path, capsys) -> None:
    bare = tmp_path / "bare"
    save_checkpoint(build_model(SPEC, seed=4), bare)
    code, out, err = run_main(capsys, "generate", "--checkpoint", str(bare), *make_args(bare, tmp_path))
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_npy_of_floats_and_missing_model_are_refused(tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "p.npy", np.zeros((1, 3)))
    code, _, err = run_main(capsys, "generate", "--model", "armt-tiny", "--tokens", str(tmp_path / "p.npy"))
    assert code == 2 and "holds float64 values: expected integer token ids" in err
    code, _, err = run_main(capsys, "generate", "--tokens", str(write(tmp_path / "p.txt", "1 2")))
    assert code == 2 and "no model given: expected a model" in err
    code, _, err = run_main(capsys, "generate", "--model", "armt-tiny", "--text", str(tmp_path / "p.txt"))
    assert code == 2 and "needs a checkpoint directory holding tokenizer.json" in err


def test_the_command_module_does_not_import_torch() -> None:
    probe = "import sys, rmtsched.cli.cmd_generate; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0
