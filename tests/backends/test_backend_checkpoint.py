"""Checkpoints: rmtsched's own format round-trips exactly; HF LLaMA directories map onto the ARMT (memory weights
only when asked to seed them); every bad checkpoint is a ``CheckpointError`` that names the offending keys, shapes
or fields and what was expected. The ARMT reference layout has its own file (test_backend_armt_reference.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from rmtsched.backends.torch import build_model, execute
from rmtsched.backends.torch.checkpoint import load_checkpoint, load_model, save_checkpoint
from rmtsched.backends.torch.hf_llama import llama_shapes
from rmtsched.backends.torch.params import param_shapes
from rmtsched.backends.torch.session import OutputHash, random_token_ids
from rmtsched.cli.main import main
from rmtsched.errors import CheckpointError
from rmtsched.sched import build_cell_graph, make_schedule, split_segments
from rmtsched.specs.model import ModelSpec, load_model_spec

SPEC = ModelSpec(name="ckpt", family="armt", num_layers=3, d_model=16, num_heads=4, num_kv_heads=2, mlp_dim=24,
                 vocab_size=41, segment_len=5, mem_tokens=2, mem_key_dim=4, dtype_bytes=4)


def output_hash(model, seq_len: int = 13, seed: int = 1) -> str:
    spec = model.spec
    graph = build_cell_graph(spec.num_layers, segment_tokens=split_segments(seq_len, spec.segment_len),
                             rule=spec.dependency_rule)
    digest = OutputHash()
    execute(model, random_token_ids(spec, seq_len, seed=seed), make_schedule(graph, "diagonal"),
            on_segment_output=digest, collect_outputs=False)
    return digest.hexdigest()


def rewrite_tensors(directory: Path, change) -> None:
    """Apply ``change`` to the dict of tensors in ``directory/model.safetensors`` and save it back."""
    path = directory / "model.safetensors"
    tensors = dict(safetensors.torch.load_file(str(path)))
    change(tensors)
    safetensors.torch.save_file(tensors, str(path))


# -- own format ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["armt", "rmt"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_own_checkpoint_round_trips_bit_for_bit(tmp_path: Path, family: str, dtype: torch.dtype) -> None:
    spec = SPEC.replace(family=family)
    model = build_model(spec, seed=4, dtype=dtype)
    save_checkpoint(model, tmp_path)
    loaded = load_checkpoint(tmp_path)
    assert loaded.spec == spec and loaded.dtype == dtype and type(loaded) is type(model)
    assert loaded.params.keys() == model.params.keys()
    assert all(torch.equal(loaded.params[name], model.params[name]) for name in model.params)
    assert output_hash(loaded) == output_hash(model)
    assert output_hash(loaded) != output_hash(build_model(spec, seed=5, dtype=dtype))


def test_loading_takes_run_choices_from_the_given_spec(tmp_path: Path) -> None:
    model = build_model(SPEC, seed=2)
    save_checkpoint(model, tmp_path)
    longer = SPEC.replace(segment_len=7, name="other")
    loaded = load_model(tmp_path, longer, dtype=torch.float64)
    assert loaded.spec == longer and loaded.dtype == torch.float64
    assert torch.equal(loaded.params["wqkv"], model.params["wqkv"].double())
    assert set(loaded.weight_sources.values()) == {"checkpoint"} and loaded.weight_sources.keys() == model.params.keys()


def test_spec_overrides_change_run_choices_and_refuse_weight_fields(tmp_path: Path) -> None:
    save_checkpoint(build_model(SPEC.replace(tie_word_embeddings=True), seed=2), tmp_path)
    loaded = load_model(tmp_path, spec_overrides={"segment_len": 9, "armt_variant": "normalized", "name": "n"})
    assert (loaded.spec.segment_len, loaded.spec.armt_variant, loaded.spec.name) == (9, "normalized", "n")
    assert loaded.weight_sources["lm_head"] == "tied" and "lm_head" not in loaded.params
    with pytest.raises(CheckpointError, match=r"mem_tokens=2 from .*rmtsched\.json but 5 in the spec_overrides"):
        load_model(tmp_path, spec_overrides={"mem_tokens": 5})
    with pytest.raises(CheckpointError, match=r"unknown model spec field\(s\) \['segment_length'\]"):
        load_model(tmp_path, spec_overrides={"segment_length": 5})
    with pytest.raises(CheckpointError, match=r"init_memory 'random' is not one of \[None, 'seed'\]"):
        load_model(tmp_path, init_memory="random")
    with pytest.raises(CheckpointError, match=r"spec_overrides \{'segment_len': 0\} do not fit .*segment_len must be"):
        load_model(tmp_path, spec_overrides={"segment_len": 0})


def test_memory_free_model_round_trips(tmp_path: Path) -> None:
    model = build_model(SPEC.replace(mem_tokens=0), seed=1)
    save_checkpoint(model, tmp_path)
    assert output_hash(load_model(tmp_path)) == output_hash(model)


def test_a_slice_cannot_be_saved(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"layers range\(1, 3\).*all 3 layers"):
        save_checkpoint(build_model(SPEC).slice_layers(1, 3), tmp_path)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    save_checkpoint(build_model(SPEC, seed=3), tmp_path)
    return tmp_path


def test_missing_extra_and_misshaped_tensors_are_all_listed(saved: Path) -> None:
    def damage(tensors):
        del tensors["wo"], tensors["mem_wq"]
        tensors["w_down"] = tensors["w_down"][:, :, :5].contiguous()
        tensors["stray"] = torch.zeros(2)

    rewrite_tensors(saved, damage)
    with pytest.raises(CheckpointError) as info:
        load_model(saved)
    message = str(info.value)
    shapes = param_shapes(SPEC)
    assert "4 problem(s)" in message and "\n" not in message
    assert f"missing wo (expected shape {list(shapes['wo'])})" in message
    assert f"missing mem_wq (expected shape {list(shapes['mem_wq'])})" in message
    assert f"w_down has shape [3, 16, 5], expected {list(shapes['w_down'])}" in message
    assert "unexpected stray (shape [2])" in message


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda h: h.update(version=2), "version 2: expected 'rmtsched-checkpoint' version 1"),
        (lambda h: h.update(format="other"), "format 'other' version 1"),
        (lambda h: h["spec"].pop("d_model"), "missing field(s) ['d_model']"),
        (lambda h: h.update(dtype="fp7"), "unknown dtype 'fp7'"),
    ],
)
def test_bad_header_names_what_was_expected(saved: Path, edit, message: str) -> None:
    header = json.loads((saved / "rmtsched.json").read_text())
    edit(header)
    (saved / "rmtsched.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match=r"rmtsched\.json") as info:
        load_model(saved)
    assert message in str(info.value)


def test_missing_files_are_named(saved: Path, tmp_path_factory) -> None:
    (saved / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors' is missing"):
        load_model(saved)
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(CheckpointError, match=r"holds none of the known layouts.*rmtsched\.json.*config\.json"):
        load_model(empty)
    with pytest.raises(CheckpointError, match="is not a directory"):
        load_model(empty / "absent")


def test_corrupt_tensor_file_is_a_checkpoint_error(saved: Path) -> None:
    (saved / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(saved)


def test_a_disagreeing_spec_names_every_field(saved: Path) -> None:
    given = SPEC.replace(mem_tokens=3, num_layers=2)
    with pytest.raises(CheckpointError) as info:
        load_model(saved, given)
    message = str(info.value)
    assert "num_layers=3 from " in message and "rmtsched.json but 2 in the given spec" in message
    assert "mem_tokens=2 from " in message and "rmtsched.json but 3 in the given spec" in message


# -- Hugging Face LLaMA directories ----------------------------------------------------------------------

HF_CONFIG = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 41, "rms_norm_eps": 1e-5,
             "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}, "hidden_act": "silu"}
RUN = {"segment_len": 5, "mem_tokens": 2, "mem_key_dim": 4, "name": "hf"}
HF_SPEC = ModelSpec(family="armt", num_layers=2, d_model=16, num_heads=4, num_kv_heads=2, mlp_dim=24, vocab_size=41,
                    rms_norm_eps=1e-5, **RUN)


def hf_tensors(spec: ModelSpec, prefix: str = "model.", lm_head: bool = True) -> dict[str, torch.Tensor]:
    """A LLaMA state dict of ``spec``'s sizes with distinct random values (so a mix-up shows)."""
    generator = torch.Generator().manual_seed(0)
    tensors = {name: torch.randn(shape, generator=generator)
               for name, shape in llama_shapes(spec.replace(tie_word_embeddings=not lm_head)).items()}
    return {(name if name.startswith("lm_head") else prefix + name.removeprefix("model.")): value
            for name, value in tensors.items()}


def write_hf(directory: Path, tensors: dict[str, torch.Tensor], config: dict = HF_CONFIG, shards: int = 1) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    if shards == 1:
        safetensors.torch.save_file(tensors, str(directory / "model.safetensors"))
        return directory
    names = sorted(tensors)
    weight_map = {}
    for shard in range(shards):
        file = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
        part = {name: tensors[name] for name in names[shard::shards]}
        safetensors.torch.save_file(part, str(directory / file))
        weight_map.update(dict.fromkeys(part, file))
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return directory


def load_seeded(directory: Path, **kwargs) -> torch.nn.Module:
    return load_model(directory, spec_overrides={**RUN, **kwargs.pop("overrides", {})}, init_memory="seed", **kwargs)


@pytest.mark.parametrize(("prefix", "shards"), [("model.", 1), ("model.", 3)])
def test_hf_tensors_map_onto_the_parameter_table(tmp_path: Path, prefix: str, shards: int) -> None:
    tensors = hf_tensors(HF_SPEC, prefix)
    tensors[f"{prefix}layers.0.self_attn.rotary_emb.inv_freq"] = torch.zeros(2)
    model = load_seeded(write_hf(tmp_path, tensors, shards=shards), seed=9, dtype=torch.float64)
    assert model.spec == HF_SPEC.replace(dtype_bytes=8)  # the sim's element size follows the load dtype
    p, t = model.params, {name.removeprefix(prefix): value.double() for name, value in tensors.items()}
    assert model.dtype == torch.float64 and torch.equal(p["embed"], t["embed_tokens.weight"])
    assert torch.equal(p["final_norm"], t["norm.weight"]) and torch.equal(p["lm_head"], t["lm_head.weight"])
    for layer in range(2):
        hf = {name.removeprefix(f"layers.{layer}."): value for name, value in t.items()
              if name.startswith(f"layers.{layer}.")}
        qkv = torch.cat([hf[f"self_attn.{x}_proj.weight"] for x in "qkv"])
        assert torch.equal(p["wqkv"][layer], qkv)
        assert torch.equal(p["w_gate_up"][layer], torch.cat([hf["mlp.gate_proj.weight"], hf["mlp.up_proj.weight"]]))
        assert torch.equal(p["wo"][layer], hf["self_attn.o_proj.weight"])
        assert torch.equal(p["w_down"][layer], hf["mlp.down_proj.weight"])
        assert torch.equal(p["attn_norm"][layer], hf["input_layernorm.weight"])
        assert torch.equal(p["mlp_norm"][layer], hf["post_attention_layernorm.weight"])
    seeded = build_model(HF_SPEC, seed=9, dtype=torch.float64).params
    memory = ("memory", "mem_wq", "mem_wkvb", "mem_b_bias")
    for name in memory:
        assert torch.equal(p[name], seeded[name]), name
    assert model.weight_sources == {name: "seed" if name in memory else "checkpoint" for name in p}
    other_seed = load_seeded(tmp_path, seed=10)
    assert not torch.equal(other_seed.params["mem_wq"], seeded["mem_wq"].float())


def test_hf_llama_without_memory_weights_is_refused_unless_seeded(tmp_path: Path) -> None:
    write_hf(tmp_path, hf_tensors(HF_SPEC))
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path, spec_overrides=RUN)
    message = str(info.value)
    assert "plain Hugging Face LLaMA" in message and "mem_wq" in message and "init_memory='seed'" in message
    assert "--init-memory seed" in message and "\n" not in message


def test_hf_spec_comes_from_config_json_when_none_is_given(tmp_path: Path) -> None:
    model = load_model(write_hf(tmp_path / "tiny-llama", hf_tensors(HF_SPEC)), init_memory="seed",
                       spec_overrides={"family": "rmt"})
    assert model.spec.family == "rmt" and model.spec.name == "tiny-llama"
    assert (model.spec.segment_len, model.spec.mem_tokens, model.spec.mem_key_dim) == (1024, 16, 64)
    assert (model.spec.d_model, model.spec.num_kv_heads, model.spec.rms_norm_eps) == (16, 2, 1e-5)
    assert model.weight_sources["memory"] == "seed" and model.weight_sources["wqkv"] == "checkpoint"


def test_llama_model_save_without_lm_head_needs_tied_embeddings(tmp_path: Path) -> None:
    """A bare LlamaModel save (no ``model.`` prefix, no head) loads only with the head tied to the embeddings."""
    write_hf(tmp_path, hf_tensors(HF_SPEC, prefix="", lm_head=False))
    with pytest.raises(CheckpointError, match=r"no lm_head\.weight .* tie_word_embeddings is false"):
        load_seeded(tmp_path)
    model = load_seeded(tmp_path, overrides={"tie_word_embeddings": True})
    assert model.weight_sources["lm_head"] == "tied" and torch.equal(model.lm_head_weight, model.params["embed"])


def test_tied_config_loads_without_lm_head_and_refuses_a_different_one(tmp_path: Path) -> None:
    config = {**HF_CONFIG, "tie_word_embeddings": True}
    tensors = hf_tensors(HF_SPEC, lm_head=False)
    assert load_seeded(write_hf(tmp_path, tensors, config)).weight_sources["lm_head"] == "tied"
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    assert load_seeded(write_hf(tmp_path, tensors, config)).spec.tie_word_embeddings
    tensors["lm_head.weight"] = tensors["lm_head.weight"] + 1
    with pytest.raises(CheckpointError, match=r"lm_head\.weight differs from the embedding table"):
        load_seeded(write_hf(tmp_path, tensors, config))
    with pytest.raises(CheckpointError, match=r"tie_word_embeddings=True from .*config\.json .* but False"):
        load_seeded(tmp_path, overrides={"tie_word_embeddings": False})


def test_hf_missing_and_misshaped_tensors_are_all_listed(tmp_path: Path) -> None:
    tensors = hf_tensors(HF_SPEC, "model.")
    del tensors["model.layers.1.mlp.up_proj.weight"], tensors["model.norm.weight"]
    tensors["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(4, 16)
    tensors["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(16)
    with pytest.raises(CheckpointError) as info:
        load_seeded(write_hf(tmp_path, tensors, shards=2))
    message = str(info.value)
    assert "4 problem(s)" in message
    assert "missing model.layers.1.mlp.up_proj.weight (expected shape [24, 16])" in message
    assert "missing model.norm.weight (expected shape [16])" in message
    assert "model.layers.0.self_attn.k_proj.weight has shape [4, 16], expected [8, 16]" in message
    assert "unexpected model.layers.0.self_attn.q_proj.bias" in message


def test_hf_index_naming_a_missing_shard_is_named(tmp_path: Path) -> None:
    write_hf(tmp_path, hf_tensors(HF_SPEC), shards=2)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"shard '.*model-00002-of-00002\.safetensors' is missing"):
        load_seeded(tmp_path)


def test_several_safetensors_without_an_index_are_refused(tmp_path: Path) -> None:
    write_hf(tmp_path, hf_tensors(HF_SPEC), shards=2)
    (tmp_path / "model.safetensors.index.json").unlink()
    with pytest.raises(CheckpointError, match=r"expected model\.safetensors \(or shards listed by .*found .*00001"):
        load_seeded(tmp_path)


def test_hf_config_that_disagrees_with_the_spec_names_the_field(tmp_path: Path) -> None:
    write_hf(tmp_path, hf_tensors(HF_SPEC))
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path, HF_SPEC.replace(num_kv_heads=4, rms_norm_eps=1e-6), init_memory="seed")
    message = str(info.value)
    assert "num_kv_heads=2 from " in message and "config.json num_key_value_heads but 4 in the given spec" in message
    assert "rms_norm_eps=1e-05 from " in message and "config.json rms_norm_eps but 1e-06 in the given spec" in message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rope_parameters": {"rope_theta": 5e5, "rope_type": "yarn", "factor": 4.0}},
         "rope_type='yarn' is not supported"),
        ({"rope_parameters": {"rope_theta": 5e5, "rope_type": "llama3", "factor": 8.0}},
         "rope type llama3 needs low_freq_factor"),
        ({"rope_parameters": {"rope_theta": 5e5, "rope_type": "default", "partial_rotary_factor": 0.5}},
         "partial_rotary_factor=0.5 is not supported"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu' is not supported"),
        ({"attention_bias": True}, "attention_bias=True is not supported"),
        ({"mlp_bias": True}, "mlp_bias=True is not supported"),
        ({"sliding_window": 4096}, "sliding_window=4096 is not supported"),
        ({"model_type": "mistral"}, "model_type='mistral' is not supported"),
        ({"head_dim": 8}, "head_dim=8 is not supported"),
        ({"vocab_size": None}, "vocab_size must be a positive integer"),
    ],
)
def test_hf_config_the_backend_cannot_run_is_refused(tmp_path: Path, change: dict, message: str) -> None:
    config = {**HF_CONFIG, **change}
    with pytest.raises(CheckpointError, match=r"config\.json") as info:
        load_seeded(write_hf(tmp_path, hf_tensors(HF_SPEC), config))
    assert message in str(info.value)


def test_transformers_4_rope_scaling_is_read(tmp_path: Path) -> None:
    """4.x configs keep rope_theta at the top and the llama3 factors in ``rope_scaling``."""
    config = {key: value for key, value in HF_CONFIG.items() if key != "rope_parameters"}
    config.update(rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    spec = load_seeded(write_hf(tmp_path, hf_tensors(HF_SPEC), config)).spec
    assert (spec.rope_type, spec.rope_theta, spec.rope_factor, spec.rope_original_max_position) == (
        "llama3", 500000.0, 32.0, 8192)


def test_hf_missing_config_key_is_named(tmp_path: Path) -> None:
    config = {key: value for key, value in HF_CONFIG.items() if key != "hidden_size"}
    with pytest.raises(CheckpointError, match="missing hidden_size"):
        load_seeded(write_hf(tmp_path, hf_tensors(HF_SPEC), config))


# -- rmtsched run --checkpoint ---------------------------------------------------------------------------

TINY = ["--model", "armt-tiny", "--segment-len", "8", "--mem-tokens", "2"]


def run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    code = main(["run", *TINY, "--seq-len", "20", "--schedule", "diagonal", "--json", *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_cli_runs_a_saved_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = load_model_spec("armt-tiny").replace(segment_len=8, mem_tokens=2)
    save_checkpoint(build_model(spec, seed=5), tmp_path / "s5")
    save_checkpoint(build_model(spec, seed=7), tmp_path / "s7")
    seeded = run_json(["--seed", "5"], capsys)["output_sha256"]
    assert run_json(["--seed", "5", "--checkpoint", str(tmp_path / "s5")], capsys)["output_sha256"] == seeded
    assert run_json(["--seed", "5", "--checkpoint", str(tmp_path / "s7")], capsys)["output_sha256"] != seeded


def test_cli_checkpoint_with_a_missing_key_exits_2_naming_it(tmp_path: Path, capsys) -> None:
    spec = load_model_spec("armt-tiny").replace(segment_len=8, mem_tokens=2)
    save_checkpoint(build_model(spec), tmp_path)
    rewrite_tensors(tmp_path, lambda tensors: tensors.pop("mem_wkvb"))
    code = main(["run", *TINY, "--seq-len", "20", "--schedule", "diagonal", "--checkpoint", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert "missing mem_wkvb (expected shape [4, 81, 64])" in captured.err


def test_cli_refuses_an_hf_checkpoint_without_memory_weights(tmp_path: Path, capsys) -> None:
    """Until the CLI can ask for seeded memory, a plain LLaMA checkpoint is refused in one line (exit 2)."""
    write_hf(tmp_path / "hf", hf_tensors(HF_SPEC))
    (tmp_path / "spec.json").write_text(json.dumps(HF_SPEC.to_dict()))
    args = ["run", "--model", str(tmp_path / "spec.json"), "--seq-len", "12", "--schedule", "diagonal"]
    assert main([*args, "--checkpoint", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "plain Hugging Face LLaMA" in err
