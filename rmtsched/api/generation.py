"""``rmtsched.generate``: greedy generation after a prompt, and the record ``rmtsched generate`` prints.

The prompt (``RunConfig``'s ``--tokens``/``--text`` file, or seeded random ids of ``seq_len``) builds the
memory with any schedule; the last segment and the new tokens are decoded with a KV cache
(``backends/torch/generate.py``). The record holds the new ids, their text when the checkpoint has a
tokenizer, and the timings: the memory pass, the prefill (up to the first new token) and each later token.
"""

from __future__ import annotations

import statistics
from typing import Any

from rmtsched.api.model import check_fits_on, config_with, input_provenance, load_config, seeded_spec
from rmtsched.backends.torch.generate import generate as generate_tokens
from rmtsched.backends.torch.session import weight_source_summary
from rmtsched.backends.torch.token_io import load_tokenizer
from rmtsched.sched import get_scheduler
from rmtsched.specs.guard import generate_estimate
from rmtsched.specs.provenance import stamped
from rmtsched.specs.run import RunConfig


def generate(
    config: RunConfig | None = None,
    *,
    max_new_tokens: int = 32,
    schedule: str = "diagonal",
    eos_token_id: int | None = None,
    warmup: bool = True,
    force: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """Generate ``max_new_tokens`` greedily after ``config``'s prompt; return ``rmtsched generate``'s record.

    ``warmup`` first generates two tokens untimed (one-time GEMM probes, allocator), so the timings
    describe the steady state. A request estimated not to fit this machine's memory or a week of work is
    refused (``specs.guard``) unless ``force``.
    """
    config = config_with(config, fields)
    config.require_input()
    get_scheduler(schedule)  # an unknown name fails before anything is loaded
    tokenizer = load_tokenizer(config.checkpoint) if config.text is not None else None
    model = None if config.checkpoint is None else load_config(config)
    spec = seeded_spec(config) if model is None else model.spec
    if config.seq_len is not None:  # before random ids of that length are drawn or weights are built
        check_fits_on(generate_estimate(spec, config.seq_len, max_new_tokens, config.dtype_name), config, force)
    model = load_config(config) if model is None else model
    token_input = model.input_of(config)
    prompt = token_input.ids
    check_fits_on(generate_estimate(spec, int(prompt.shape[1]), max_new_tokens, config.dtype_name), config, force)
    if warmup:
        generate_tokens(model.backend, prompt, min(2, max_new_tokens), schedule)
    result = generate_tokens(model.backend, prompt, max_new_tokens, schedule, eos_token_id=eos_token_id)
    new_tokens = result.tokens.tolist()
    batch, prompt_tokens = prompt.shape
    decode_s = list(result.decode_s)
    record: dict[str, Any] = {
        "model": model.spec.name, "family": model.spec.family, "schedule": schedule, "batch": batch,
        "prompt_tokens": prompt_tokens, "segment_len": model.spec.segment_len, "new_tokens": new_tokens,
        **input_provenance(config, model.spec, weight_source_summary(model.backend), token_input),
    }  # fmt: skip
    if tokenizer is not None:
        record["text"] = [tokenizer.decode(row) for row in new_tokens]
    record.update({
        "memory_s": result.memory_s, "prefill_s": result.prefill_s,
        "prefill_tokens_per_s": batch * prompt_tokens / result.prefill_s, "decode_s": decode_s,
        "decode_ms_per_token": 1e3 * statistics.median(decode_s) if decode_s else None,
    })  # fmt: skip
    return stamped(record)


__all__ = ["generate"]
