"""Write tiny checkpoints in the layouts real ARMT users have, to try ``--checkpoint`` without downloads.

    python examples/make_tiny_checkpoints.py OUT_DIR

writes three directories under OUT_DIR, each with a ``config.json`` (a Llama-3-style config: ``rope_type
llama3`` scaling, tied embeddings), ``model.safetensors`` and a word-level ``tokenizer.json`` (words
``w0`` .. ``w255``):

* ``armt-reference/``: the ARMT reference training code's layout (design notes section 3): the wrapper's
  state dict under ``memory_cell.``, memory projections ``W_mq``/``W_mk``/``W_mv``/``W_mb`` beside each
  Hugging Face decoder layer (``layer.``), the memory embeddings ``memory_cell.memory``;
* ``armt-reference-lora/``: the same after a peft LoRA run (``base_model.model.`` inserted, adapted linears
  split into ``base_layer`` / ``lora_A.default`` / ``lora_B.default``, plus ``adapter_config.json``);
* ``llama3-base/``: a plain ``LlamaForCausalLM`` save, which has no ARMT memory weights
  (``--init-memory seed`` draws them).

The weights are random (seeded): the point is the file layouts, not the text a model writes. The LLaMA
part is made by transformers itself, so its key names and config are Hugging Face's own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import safetensors.torch
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

VOCAB = 256
MEM_TOKENS, D_MEM = 4, 8
LORA_R, LORA_ALPHA, LORA_TARGETS = 4, 8, ("q_proj", "v_proj")
CONFIG = transformers.LlamaConfig(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=500000.0,
    rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 1024},
)


def base_llama(seed: int = 0) -> transformers.LlamaForCausalLM:
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(CONFIG).eval()


def memory_tensors(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The memory embeddings and, per layer, the reference's memory projections (names relative to the layer)."""
    d = CONFIG.hidden_size

    def draw(*shape: int, std: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    tensors = {"memory_cell.memory": draw(MEM_TOKENS, d, std=1.0)}
    for layer in range(CONFIG.num_hidden_layers):
        prefix = f"memory_cell.model.model.layers.{layer}."
        tensors |= {prefix + "W_mq.weight": draw(D_MEM, d), prefix + "W_mk.weight": draw(D_MEM, d),
                    prefix + "W_mv.weight": draw(d, d), prefix + "W_mb.weight": draw(1, d),
                    prefix + "W_mb.bias": torch.zeros(1)}
    return tensors


def reference_state_dict(llama: transformers.LlamaForCausalLM, lora: bool) -> dict[str, torch.Tensor]:
    """The LLaMA's tensors renamed as the reference wrapper saves them (the lm_head is tied: not saved)."""
    root = "memory_cell.model.base_model.model." if lora else "memory_cell.model."
    generator = torch.Generator().manual_seed(1)
    state = {}
    for name, value in llama.state_dict().items():
        if name == "lm_head.weight":
            continue
        if name.startswith("model.layers."):
            layer, rest = name.removeprefix("model.layers.").split(".", 1)
            name = f"model.layers.{layer}.layer.{rest}"
        target = name.removesuffix(".weight").rsplit(".", 1)[-1]
        if lora and target in LORA_TARGETS:
            base = root + name.removesuffix(".weight")
            out_features, in_features = value.shape
            state[base + ".base_layer.weight"] = value
            state[base + ".lora_A.default.weight"] = torch.randn(LORA_R, in_features, generator=generator) * 0.02
            state[base + ".lora_B.default.weight"] = torch.randn(out_features, LORA_R, generator=generator) * 0.02
        else:
            state[root + name] = value
    memory = memory_tensors(torch.Generator().manual_seed(2))
    if lora:
        memory = {key.replace("memory_cell.model.", root, 1): value for key, value in memory.items()}
    return state | memory


def word_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


def save(directory: Path, tensors: dict[str, torch.Tensor], adapter: dict | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: value.detach().contiguous() for name, value in tensors.items()}
    safetensors.torch.save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    CONFIG.to_json_file(str(directory / "config.json"))
    word_tokenizer().save(str(directory / "tokenizer.json"))
    if adapter is not None:
        (directory / "adapter_config.json").write_text(json.dumps(adapter, indent=2) + "\n")


def main(out: Path) -> None:
    llama = base_llama()
    save(out / "armt-reference", reference_state_dict(llama, lora=False))
    adapter = {"peft_type": "LORA", "r": LORA_R, "lora_alpha": LORA_ALPHA, "target_modules": list(LORA_TARGETS),
               "lora_dropout": 0.0, "bias": "none", "task_type": "CAUSAL_LM"}
    save(out / "armt-reference-lora", reference_state_dict(llama, lora=True), adapter)
    save(out / "llama3-base", {name: value for name, value in llama.state_dict().items() if name != "lm_head.weight"})
    print(f"wrote {out / 'armt-reference'}, {out / 'armt-reference-lora'} and {out / 'llama3-base'}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/make_tiny_checkpoints.py OUT_DIR")
    main(Path(sys.argv[1]))
