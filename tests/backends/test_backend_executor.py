"""The executor: validation, what breaking a dependency does, streaming memory, delivery order, slices."""

from __future__ import annotations

import pytest
import torch
from backend_helpers import assert_bitwise_equal, build_model, execute, graph_for, random_inputs

from rmtsched.backends.torch import StepRunner, contiguous_runs
from rmtsched.errors import ScheduleError
from rmtsched.sched import Cell, Schedule, Step, make_schedule
from rmtsched.sched.validate import DependencyError, MissingCellError
from rmtsched.specs.model import ModelSpec

SPEC = ModelSpec(name="t", family="armt", num_layers=3, d_model=16, num_heads=2, num_kv_heads=1, mlp_dim=32,
                 vocab_size=40, segment_len=5, mem_tokens=2, mem_key_dim=4)


@pytest.fixture(scope="module")
def model():
    return build_model(SPEC, seed=7)


def _schedule(cells: list[Cell]) -> Schedule:
    return Schedule(tuple(Step((cell,)) for cell in cells))


def _state_swapped_order(num_layers: int, num_segments: int, layer: int) -> list[Cell]:
    """Segment-major order, except layer ``layer`` runs segment 1 before segment 0 (data deps still met)."""
    head = [Cell(lower, s) for s in (0, 1) for lower in range(layer)]
    swapped = [Cell(layer, 1), Cell(layer, 0)]
    rest = [Cell(upper, 0) for upper in range(layer + 1, num_layers)]
    rest += [Cell(upper, 1) for upper in range(layer + 1, num_layers)]
    rest += [Cell(lyr, s) for s in range(2, num_segments) for lyr in range(num_layers)]
    return head + swapped + rest


def test_breaking_one_dependency_changes_the_output(model) -> None:
    """Mutation test: run (1, 1) before (1, 0) — layer 1's memory then sees the segments in the wrong order."""
    inputs = random_inputs(SPEC, 1, 4 * SPEC.segment_len, seed=1)
    graph = graph_for(model, inputs.shape[1])
    broken = _schedule(_state_swapped_order(SPEC.num_layers, graph.num_segments, layer=1))
    with pytest.raises(DependencyError, match=r"\(1, 1\)"):
        execute(model, inputs, broken)
    good = execute(model, inputs, make_schedule(graph, "sequential"))
    bad = execute(model, inputs, broken, validate=False)
    assert any(not torch.equal(a, b) for a, b in zip(good.outputs, bad.outputs, strict=True))
    assert not torch.equal(good.final_state["assoc"], bad.final_state["assoc"])


def test_a_missing_input_is_a_clear_error(model) -> None:
    inputs = random_inputs(SPEC, 1, SPEC.segment_len, seed=1)
    cells = [Cell(1, 0), Cell(0, 0), Cell(2, 0)]
    with pytest.raises(ScheduleError, match=r"output of cell \(0, 0\) is needed but not available"):
        execute(model, inputs, _schedule(cells), validate=False)


def test_an_incomplete_schedule_is_rejected(model) -> None:
    inputs = random_inputs(SPEC, 1, 2 * SPEC.segment_len, seed=1)
    cells = [Cell(layer, 0) for layer in range(SPEC.num_layers)]
    with pytest.raises(MissingCellError, match=r"\(0, 1\)"):
        execute(model, inputs, _schedule(cells))


@pytest.mark.parametrize("family", ["armt", "rmt"])
def test_live_activations_do_not_grow_with_sequence_length(family: str) -> None:
    spec = SPEC.replace(family=family, segment_len=2)
    model = build_model(spec, seed=7)
    peaks = {}
    for segments in (4, 40):
        inputs = random_inputs(spec, 1, segments * spec.segment_len, seed=2)
        graph = graph_for(model, inputs.shape[1])
        for name in ("sequential", "diagonal"):
            result = execute(model, inputs, make_schedule(graph, name), collect_outputs=False)
            assert result.outputs is None
            peaks[name, segments] = result.stats.peak_live_activations
    for name in ("sequential", "diagonal"):
        assert peaks[name, 4] == peaks[name, 40] <= spec.num_layers


def test_segment_outputs_stream_in_order_through_the_callback(model) -> None:
    num_tokens = 6 * SPEC.segment_len + 3
    inputs = random_inputs(SPEC, 2, num_tokens, seed=3)
    graph = graph_for(model, num_tokens)
    seen: list[tuple[int, tuple[int, ...]]] = []
    result = execute(
        model, inputs, make_schedule(graph, "diagonal"), on_segment_output=lambda s, out: seen.append((s, out.shape))
    )
    expected_tokens = [SPEC.segment_len] * 6 + [3]
    assert seen == [(s, (2, t, SPEC.d_model)) for s, t in enumerate(expected_tokens)]
    assert [out.shape[1] for out in result.outputs] == expected_tokens
    assert result.stats.cells == SPEC.num_layers * 7


def test_embeddings_input_equals_token_ids_input(model) -> None:
    inputs = random_inputs(SPEC, 2, 3 * SPEC.segment_len + 1, seed=4)
    graph = graph_for(model, inputs.shape[1])
    schedule = make_schedule(graph, "diagonal")
    by_ids = execute(model, inputs, schedule)
    by_embeddings = execute(model, model.params["embed"][inputs], schedule)
    assert_bitwise_equal(by_ids, by_embeddings, "ids vs embeddings")


def test_bad_inputs_are_rejected(model) -> None:
    schedule = make_schedule(graph_for(model, 5), "sequential")
    with pytest.raises(ValueError, match="token ids"):
        execute(model, torch.zeros(5, dtype=torch.int64), schedule)
    with pytest.raises(ValueError, match="at least one token"):
        execute(model, torch.zeros(1, 0, dtype=torch.int64), schedule)


def test_runs_split_on_layer_gaps_and_short_segments() -> None:
    tokens = (5, 5, 5, 2)
    cells = [Cell(0, 3), Cell(1, 2), Cell(2, 1), Cell(3, 0), Cell(5, 0)]
    expected = [[Cell(0, 3)], [Cell(1, 2), Cell(2, 1), Cell(3, 0)], [Cell(5, 0)]]
    assert contiguous_runs(reversed(cells), tokens) == expected


def test_layer_slices_run_as_a_pipeline_and_match_the_full_model(model) -> None:
    """Two slices driven by two StepRunners (the distributed executor's pieces) give the full model's bits."""
    inputs = random_inputs(SPEC, 1, 3 * SPEC.segment_len, seed=5)
    graph = graph_for(model, inputs.shape[1])
    full = execute(model, inputs, make_schedule(graph, "sequential"))
    front, back = model.slice_layers(0, 1), model.slice_layers(1, SPEC.num_layers)
    assert front.params["wqkv"].shape[0] == 1 and back.layers == range(1, 3)
    with pytest.raises(ValueError, match="slice"):
        execute(front, inputs, make_schedule(graph, "sequential"))
    with torch.inference_mode():
        runners = [StepRunner(front, inputs), StepRunner(back, inputs)]
        outputs = []
        for segment in range(graph.num_segments):
            runners[0].run_step([Cell(0, segment)])
            runners[1].put(Cell(0, segment), runners[0].take(Cell(0, segment)))
            for layer in range(1, SPEC.num_layers):
                finished = runners[1].run_step([Cell(layer, segment)])
            outputs.append(back.segment_output(finished[0][1]))
    for got, want in zip(outputs, full.outputs, strict=True):
        assert torch.equal(got, want)
    stitched = torch.cat([runners[0].state["assoc"], runners[1].state["assoc"]])
    assert torch.equal(stitched, full.final_state["assoc"])


def test_rmt_schedules_degrade_to_width_one() -> None:
    spec = SPEC.replace(family="rmt")
    model = build_model(spec, seed=7)
    graph = graph_for(model, 4 * spec.segment_len)
    for name in ("diagonal", "greedy"):
        schedule = make_schedule(graph, name)
        assert schedule.max_width == 1 and schedule.num_steps == graph.num_cells
        result = execute(model, random_inputs(spec, 1, 4 * spec.segment_len, seed=1), schedule)
        assert result.stats.forward_calls == graph.num_cells
