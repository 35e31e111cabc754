"""``schedule_calls`` and ``full_attention_call``: calls that ``time_calls`` times side by side.

A schedule's call and the baseline's call each deliver, run by run, exactly the outputs a direct call of
the executor or of ``full_attention_forward`` gives; warm-up runs are untimed and deliver nothing.
"""

from __future__ import annotations

import torch

from rmtsched.backends.torch import build_model, execute
from rmtsched.backends.torch.full_attention import full_attention_forward
from rmtsched.backends.torch.timing import full_attention_call, schedule_calls, time_calls
from rmtsched.sched import graph_for_tokens, make_schedule
from rmtsched.specs.model import load_model_spec

SPEC = load_model_spec("armt-tiny").replace(segment_len=8, mem_tokens=2)


def _collector(store: dict[int, list[torch.Tensor]]):
    return lambda index: lambda position, output: store.setdefault(index, []).append(output)


def test_schedules_and_the_baseline_are_timed_together_and_deliver_their_outputs() -> None:
    model = build_model(SPEC, seed=1)
    ids = torch.randint(0, SPEC.vocab_size, (1, 29), generator=torch.Generator().manual_seed(2))
    plan = make_schedule(graph_for_tokens(SPEC, 29), "diagonal")
    by_schedule: dict[int, list[torch.Tensor]] = {}
    by_baseline: dict[int, list[torch.Tensor]] = {}
    collect = _collector(by_schedule)
    calls = schedule_calls(model, ids, {"diagonal": plan}, outputs=lambda name, index: collect(index))
    calls["full-attention"] = full_attention_call(model, ids, chunk_tokens=10, outputs=_collector(by_baseline))
    assert by_schedule == {} and by_baseline == {}  # the warm-ups delivered nothing
    timings = time_calls(calls, repeat=2)
    assert [len(timings[name].runs_s) for name in calls] == [2, 2]
    expected = execute(model, ids, plan).outputs
    chunks: list[torch.Tensor] = []
    full_attention_forward(model, ids, chunk_tokens=10, on_output=lambda index, hidden: chunks.append(hidden))
    for index in (0, 1):
        assert all(torch.equal(a, b) for a, b in zip(by_schedule[index], expected, strict=True))
        assert all(torch.equal(a, b) for a, b in zip(by_baseline[index], chunks, strict=True))
    assert [chunk.shape[1] for chunk in by_baseline[0]] == [10, 10, 9]
