"""``rmtsched generate``: greedy generation from a checkpoint (or seeded weights) after a prompt file.

The prompt's full segments go through the memory with ``--schedule`` (every schedule gives the same
tokens); the last segment and the new tokens are decoded with a KV cache (``backends/torch/generate.py``).
Prints the new token ids, and their text when the checkpoint directory holds a ``tokenizer.json``;
``--json`` prints one object with the timings too (prefill, per-token decode). torch, the backend and
``tokenizers`` are imported inside the handler, so ``rmtsched --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from rmtsched.cli.args import non_negative_int, positive_int
from rmtsched.errors import RmtschedError
from rmtsched.sched import available_schedulers, get_scheduler
from rmtsched.specs.model import available_model_specs, load_model_spec

TOKENIZER_FILE = "tokenizer.json"


class PromptFileError(RmtschedError, ValueError):
    """A prompt file is missing, empty, not token ids, or text without a tokenizer."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="greedy generation after a prompt (memory, then a KV cache)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint directory (its spec comes from the files; --model may override)")
    parser.add_argument("--model", default=None,
                        help=f"a JSON model spec file or one of {available_model_specs()} (seeded weights without "
                             "--checkpoint)")
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--tokens", type=Path, help="prompt token ids: whitespace-separated integers, or a .npy "
                                                    "of shape [N] or [B, N]")
    prompt.add_argument("--text", type=Path, help=f"prompt text, encoded with the checkpoint's {TOKENIZER_FILE}")
    parser.add_argument("--max-new-tokens", type=positive_int, default=32, help="tokens to generate K (default 32)")
    parser.add_argument("--schedule", default="diagonal", help=f"schedule of the prompt's memory, one of "
                                                               f"{available_schedulers()} (default diagonal)")
    parser.add_argument("--eos-token-id", type=non_negative_int, default=None,
                        help="stop once every sequence has produced this id")
    parser.add_argument("--segment-len", type=positive_int, default=None, help="tokens per segment T")
    parser.add_argument("--mem-tokens", type=non_negative_int, default=None, help="memory tokens M (with --model)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="fp32", help="fp32 or fp64 on cpu; fp32, bf16 or fp16 on cuda")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the weights a checkpoint lacks")
    parser.add_argument("--gemm", choices=("auto", "rows", "batched"), default="auto", help="row-GEMM mode")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the untimed 2-token warm-up (one-time GEMM probes, allocator)")
    parser.add_argument("--json", action="store_true", help="print one JSON object, with timings")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from rmtsched.backends.torch.generate import generate
    from rmtsched.backends.torch.session import resolve_device

    get_scheduler(args.schedule)  # before loading anything
    device, dtype = resolve_device(args.device, args.dtype)
    tokenizer = _tokenizer(args.checkpoint) if args.text is not None else None
    rows = read_prompt_tokens(args.tokens) if tokenizer is None else [tokenizer.encode(read_prompt_text(args.text)).ids]
    model = _load(args, device, dtype)
    prompt = torch.tensor(rows, dtype=torch.int64)
    if args.warmup:
        generate(model, prompt, min(2, args.max_new_tokens), args.schedule)
    result = generate(model, prompt, args.max_new_tokens, args.schedule, eos_token_id=args.eos_token_id)
    record = _record(args, model, prompt, result, tokenizer)
    print(json.dumps(record) if args.json else _text(record))
    return 0


def _load(args: argparse.Namespace, device, dtype):
    """The model: seeded from ``--model``, or the checkpoint's (its own spec, or ``--model``'s)."""
    from rmtsched.backends.torch.checkpoint import load_model
    from rmtsched.backends.torch.models import build_model

    changes = {"segment_len": args.segment_len, "mem_tokens": args.mem_tokens}
    changes = {name: value for name, value in changes.items() if value is not None}
    if args.checkpoint is None:
        if args.model is None:
            raise RmtschedError("give --checkpoint DIR, or --model SPEC for seeded weights")
        spec = load_model_spec(args.model).replace(**changes)
        return build_model(spec, seed=args.seed, dtype=dtype, device=device, matmul=args.gemm)
    if args.model is not None:
        spec = load_model_spec(args.model).replace(**changes)
        return load_model(args.checkpoint, spec, dtype=dtype, device=device, seed=args.seed, matmul=args.gemm)
    if "mem_tokens" in changes:
        raise RmtschedError("--mem-tokens changes the memory weights' shape: give it with --model, not alone")
    model = load_model(args.checkpoint, None, dtype=dtype, device=device, seed=args.seed, matmul=args.gemm)
    if not changes:
        return model
    return build_model(model.spec.replace(**changes), params=model.params, matmul=args.gemm)


def read_prompt_tokens(path: Path) -> list[list[int]]:
    """Prompt rows from ``path``: a ``.npy`` of integer ids ``[N]`` or ``[B, N]``, else whitespace-separated
    integers (one sequence). Generate's own reader until the shared input readers land in ``cli/args.py``."""
    if not path.is_file():
        raise PromptFileError(f"token file {str(path)!r} does not exist")
    if path.suffix == ".npy":
        return _read_npy_tokens(path)
    words = path.read_text().split()
    if not words:
        raise PromptFileError(f"token file {str(path)!r} holds no token ids")
    ids = []
    for word in words:
        try:
            ids.append(int(word))
        except ValueError:
            raise PromptFileError(f"token file {str(path)!r}: {word!r} is not an integer token id") from None
    return [ids]


def _read_npy_tokens(path: Path) -> list[list[int]]:
    import numpy as np

    try:
        ids = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise PromptFileError(f"token file {str(path)!r} is not a readable .npy array: {exc}") from exc
    if ids.ndim not in (1, 2) or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise PromptFileError(
            f"token file {str(path)!r} holds a {ids.dtype} array of shape {list(ids.shape)}: expected integer "
            "ids of shape [N] or [B, N] with N >= 1"
        )
    return np.atleast_2d(ids).astype(np.int64).tolist()


def read_prompt_text(path: Path) -> str:
    """The prompt text of ``path``, without the one final newline an editor adds."""
    if not path.is_file():
        raise PromptFileError(f"text file {str(path)!r} does not exist")
    text = path.read_text()
    return text[:-1] if text.endswith("\n") else text


def _tokenizer(checkpoint: Path | None):
    if checkpoint is None or not (checkpoint / TOKENIZER_FILE).is_file():
        where = "no --checkpoint was given" if checkpoint is None else f"{str(checkpoint)!r} has no {TOKENIZER_FILE}"
        raise PromptFileError(f"--text needs a tokenizer, but {where}: give --tokens, or a directory with one")
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise PromptFileError("--text needs the 'tokenizers' package: pip install tokenizers") from exc
    return Tokenizer.from_file(str(checkpoint / TOKENIZER_FILE))


def _record(args: argparse.Namespace, model, prompt, result, tokenizer) -> dict[str, Any]:
    new_tokens = result.tokens.tolist()
    batch, prompt_tokens = prompt.shape
    record: dict[str, Any] = {
        "model": model.spec.name, "family": model.spec.family,
        "checkpoint": str(args.checkpoint) if args.checkpoint else None, "schedule": args.schedule,
        "batch": batch, "prompt_tokens": prompt_tokens, "segment_len": model.spec.segment_len,
        "new_tokens": new_tokens,
    }  # fmt: skip
    if tokenizer is not None:
        record["text"] = [tokenizer.decode(row) for row in new_tokens]
    decode_s = list(result.decode_s)
    record.update({
        "memory_s": result.memory_s, "prefill_s": result.prefill_s,
        "prefill_tokens_per_s": batch * prompt_tokens / result.prefill_s, "decode_s": decode_s,
        "decode_ms_per_token": 1e3 * statistics.median(decode_s) if decode_s else None,
    })  # fmt: skip
    return record


def _text(record: dict[str, Any]) -> str:
    """One line of ids per sequence (``tokens[i]:`` when there are several), then one of text each."""
    rows, texts = record["new_tokens"], record.get("text", [])
    index = (lambda i: "") if len(rows) == 1 else (lambda i: f"[{i}]")
    lines = [f"tokens{index(i)}: {' '.join(map(str, row))}" for i, row in enumerate(rows)]
    return "\n".join(lines + [f"text{index(i)}: {text}" for i, text in enumerate(texts)])
