"""ARMT reference checkpoints load exactly: our executor's logits equal those of an independent transcription of
the reference wrapper (``checkpoint_fixtures.ReferenceARMT``: transformers' LlamaForCausalLM, peft's LoRA, the
memory written from the design notes) within 1e-10 in fp64, for both maths variants, with and without LoRA,
under either layer-prefix alias; bad reference checkpoints get one line naming the key or field.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch
from checkpoint_fixtures import LLAMA3_ROPE, full_precision_hf, reference_checkpoint

from rmtsched.backends.torch import execute
from rmtsched.backends.torch.checkpoint import load_model
from rmtsched.errors import CheckpointError
from rmtsched.sched import graph_for_tokens, make_schedule

__all__ = ["full_precision_hf"]  # a fixture the tests below request by name
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

SEGMENT_LEN, MEM_TOKENS, D_MEM, SEQ_LEN = 7, 3, 5, 4 * 7 + 3
TOLERANCE = 1e-10


def our_logits(model, ids: torch.Tensor, schedule: str = "diagonal") -> torch.Tensor:
    result = execute(model, ids, make_schedule(graph_for_tokens(model, ids.shape[1]), schedule))
    return torch.cat([model.logits(output) for output in result.outputs], dim=1)


def ids_for(batch: int = 2) -> torch.Tensor:
    return torch.randint(0, 100, (batch, SEQ_LEN), generator=torch.Generator().manual_seed(1))


def saved_reference(directory: Path, variant: str = "paper", lora: bool = False, alias: str = "long",
                    rope: dict | None = None, tie: bool = False):
    return reference_checkpoint(directory, variant, lora, alias, rope, tie, MEM_TOKENS, D_MEM)


@pytest.mark.usefixtures("full_precision_hf")
@pytest.mark.parametrize(
    ("variant", "lora", "alias", "rope", "tie"),
    [
        ("paper", False, "long", None, False),
        ("paper", True, "short", None, False),
        ("normalized", False, "short", None, False),
        ("normalized", True, "long", None, False),
        ("paper", True, "mixed", LLAMA3_ROPE, True),
        ("normalized", False, "mixed", LLAMA3_ROPE, True),
    ],
)
def test_reference_checkpoint_logits_equal_the_reference_transcription(
    tmp_path: Path, variant: str, lora: bool, alias: str, rope: dict | None, tie: bool
) -> None:
    wrapper = saved_reference(tmp_path, variant, lora, alias, rope, tie)
    model = load_model(tmp_path, spec_overrides={"segment_len": SEGMENT_LEN, "armt_variant": variant},
                       dtype=torch.float64)
    spec = model.spec
    assert (spec.mem_tokens, spec.mem_key_dim, spec.dpfp_nu, spec.tie_word_embeddings) == (MEM_TOKENS, D_MEM, 3, tie)
    ids = ids_for()
    want = wrapper(ids, SEGMENT_LEN)
    got = our_logits(model, ids)
    assert got.shape == want.shape == (2, SEQ_LEN, 100)
    assert (got - want).abs().max().item() < TOLERANCE
    adapted = {"wqkv", "w_down"} if lora else set()
    expected = {name: "lora-merged" if name in adapted else "checkpoint" for name in model.params}
    assert model.weight_sources == {**expected, **({"lm_head": "tied"} if tie else {})}


@pytest.mark.usefixtures("full_precision_hf")
def test_the_variant_and_the_memory_visibly_change_the_logits(tmp_path: Path) -> None:
    """Guard against a vacuous comparison: loading with the other variant, or zeroing the memory values,
    moves the logits of later segments far beyond the tolerance (the memory is written and read)."""
    wrapper = saved_reference(tmp_path, "paper")
    ids = ids_for(1)
    want = wrapper(ids, SEGMENT_LEN)
    other = load_model(tmp_path, spec_overrides={"segment_len": SEGMENT_LEN, "armt_variant": "normalized"},
                       dtype=torch.float64)
    assert (our_logits(other, ids) - want)[:, SEGMENT_LEN:].abs().max() > 1e-3
    paper = load_model(tmp_path, spec_overrides={"segment_len": SEGMENT_LEN}, dtype=torch.float64)
    paper.params["mem_wkvb"][:, D_MEM : D_MEM + 32] = 0  # W_mv = 0: the memory stores nothing
    assert (our_logits(paper, ids) - want)[:, SEGMENT_LEN:].abs().max() > 1e-3


def test_fp32_load_is_bit_exact_across_schedules_and_close_to_fp64(tmp_path: Path) -> None:
    saved_reference(tmp_path, "paper", lora=True)
    model = load_model(tmp_path, spec_overrides={"segment_len": SEGMENT_LEN})
    assert model.dtype == torch.float32
    ids = ids_for()
    sequential = our_logits(model, ids, "sequential")
    assert torch.equal(sequential, our_logits(model, ids, "diagonal"))
    exact = our_logits(load_model(tmp_path, spec_overrides={"segment_len": SEGMENT_LEN}, dtype=torch.float64), ids)
    assert (sequential.double() - exact).abs().max() < 1e-3


# -- bad reference checkpoints ---------------------------------------------------------------------------


def rewrite(directory: Path, change) -> None:
    path = directory / "model.safetensors"
    tensors = dict(safetensors.torch.load_file(str(path)))
    change(tensors)
    safetensors.torch.save_file(tensors, str(path))


def one_line_error(directory: Path, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        load_model(directory, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_unknown_and_misshaped_reference_tensors_are_named(tmp_path: Path) -> None:
    saved_reference(tmp_path, alias="short")

    def damage(tensors):
        del tensors["memory_cell.layers.1.W_mq.weight"], tensors["memory_cell.layers.0.layer.mlp.up_proj.weight"]
        tensors["memory_cell.layers.0.W_mv.weight"] = torch.zeros(32, 31)
        tensors["memory_cell.sink"] = torch.zeros(1, 32)

    rewrite(tmp_path, damage)
    message = one_line_error(tmp_path)
    assert "4 problem(s)" in message
    assert f"missing memory_cell.layers.1.W_mq.weight (expected shape [{D_MEM}, 32])" in message
    assert "missing memory_cell.layers.0.layer.mlp.up_proj.weight (expected shape [64, 32])" in message
    assert "memory_cell.layers.0.W_mv.weight has shape [32, 31], expected [32, 32]" in message
    assert "unexpected memory_cell.sink (shape [1, 32])" in message


def test_missing_memory_embeddings_are_named(tmp_path: Path) -> None:
    saved_reference(tmp_path)
    rewrite(tmp_path, lambda tensors: tensors.pop("memory_cell.memory"))
    assert "missing memory_cell.memory (expected shape [16, 32])" in one_line_error(tmp_path)


def test_lora_tensors_without_adapter_config_are_refused(tmp_path: Path) -> None:
    saved_reference(tmp_path, lora=True)
    (tmp_path / "adapter_config.json").unlink()
    message = one_line_error(tmp_path)
    assert "holds LoRA tensors (memory_cell." in message and "but no adapter_config.json" in message


def test_adapter_config_without_lora_tensors_is_refused(tmp_path: Path) -> None:
    saved_reference(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    assert "has adapter_config.json but no LoRA tensors" in one_line_error(tmp_path)


@pytest.mark.parametrize(("change", "message"), [
    ({"use_dora": True}, "use_dora=True is not supported"),
    ({"use_rslora": True}, "use_rslora=True is not supported"),
    ({"r": 0}, "r=0 must be a positive integer"),
])
def test_adapter_settings_we_do_not_implement_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    saved_reference(tmp_path, lora=True)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, **change}))
    assert message in one_line_error(tmp_path)


def test_lora_rank_that_disagrees_with_the_adapter_config_is_named(tmp_path: Path) -> None:
    saved_reference(tmp_path, lora=True)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, "r": 2}))
    message = one_line_error(tmp_path)
    assert "lora_A.default.weight has shape [4, 32], expected [2, 32] (r=2)" in message


def test_aliases_holding_different_values_are_refused(tmp_path: Path) -> None:
    saved_reference(tmp_path, alias="long")

    def add_alias(tensors):
        tensors["memory_cell.layers.0.W_mq.weight"] = tensors["memory_cell.model.model.layers.0.W_mq.weight"] + 1

    rewrite(tmp_path, add_alias)
    assert "name one shared tensor but hold different values" in one_line_error(tmp_path)


def test_a_spec_that_contradicts_the_checkpoint_names_the_field(tmp_path: Path) -> None:
    saved_reference(tmp_path)
    message = one_line_error(tmp_path, spec_overrides={"mem_tokens": 4, "mem_key_dim": 6})
    assert f"mem_tokens={MEM_TOKENS} from memory_cell.memory but 4 in the spec_overrides" in message
    assert f"mem_key_dim={D_MEM} from memory_cell.model.model.layers.0.W_mq.weight but 6" in message
    assert "family='armt' from the memory_cell.* layout but 'rmt'" in one_line_error(
        tmp_path, spec_overrides={"family": "rmt"})
