"""The parameter dictionary of the built-in ARMT/RMT models: names, shapes and seeded initialisation.

A model's weights are ONE flat ``dict[str, Tensor]``. Per-layer weights are stacked with the layer as
dim 0, so the weights of contiguous layers l0..l1 are the slice view ``params[name][l0:l1]``. Linear
weights use ``nn.Linear``'s layout ``[out_features, in_features]`` (y = x @ W^T), so a Hugging Face
LLaMA checkpoint maps onto them without transposes. With L layers, d = d_model, H/K query/kv heads of
size hd, F = mlp_dim, V = vocab, M = mem tokens, m = mem_key_dim (ARMT's d_mem):

====================  ===========================  ===============================================
name                  shape                        Hugging Face LLaMA source (per layer l)
====================  ===========================  ===============================================
embed                 [V, d]                       model.embed_tokens.weight
final_norm            [d]                          model.norm.weight
memory                [M, d]                       (none) learned memory-token embeddings
lm_head               [V, d]                       lm_head.weight (absent when tie_word_embeddings)
attn_norm             [L, d]                       layers.l.input_layernorm.weight
wqkv                  [L, (H + 2K) hd, d]          cat(q_proj, k_proj, v_proj).weight, dim 0
wo                    [L, d, H hd]                 layers.l.self_attn.o_proj.weight
mlp_norm              [L, d]                       layers.l.post_attention_layernorm.weight
w_gate_up             [L, 2F, d]                   cat(gate_proj, up_proj).weight, dim 0
w_down                [L, d, F]                    layers.l.mlp.down_proj.weight
mem_wq   (ARMT)       [L, m, d]                    (ARMT reference W_mq.weight)
mem_wkvb (ARMT)       [L, m + d + 1, d]            cat(W_mk, W_mv, W_mb).weight, dim 0
mem_b_bias (ARMT)     [L]                          W_mb.bias
====================  ===========================  ===============================================

Initialisation is deterministic and device-independent: every (name, layer) tensor is drawn in fp32
on the CPU from its own ``torch.Generator`` seeded by (seed, name, layer), then cast and moved, so a
slice of layers draws exactly what the full model holds for those layers.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping

import torch

from rmtsched.specs.model import ModelSpec

# Names of the per-layer (stacked) tensors, by family.
LLAMA_LAYER_PARAMS = ("attn_norm", "wqkv", "wo", "mlp_norm", "w_gate_up", "w_down")
ARMT_LAYER_PARAMS = ("mem_wq", "mem_wkvb", "mem_b_bias")
GLOBAL_PARAMS = ("embed", "final_norm", "memory", "lm_head")


def layer_param_names(spec: ModelSpec) -> tuple[str, ...]:
    return LLAMA_LAYER_PARAMS + (ARMT_LAYER_PARAMS if spec.family == "armt" else ())


def param_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor in the parameter dict (per-layer ones with their leading L)."""
    d, hd, big_l = spec.d_model, spec.head_dim, spec.num_layers
    shapes: dict[str, tuple[int, ...]] = {
        "embed": (spec.vocab_size, d),
        "final_norm": (d,),
        "memory": (spec.mem_tokens, d),
        "attn_norm": (big_l, d),
        "wqkv": (big_l, (spec.num_heads + 2 * spec.num_kv_heads) * hd, d),
        "wo": (big_l, d, spec.num_heads * hd),
        "mlp_norm": (big_l, d),
        "w_gate_up": (big_l, 2 * spec.mlp_dim, d),
        "w_down": (big_l, d, spec.mlp_dim),
    }
    if not spec.tie_word_embeddings:
        shapes["lm_head"] = (spec.vocab_size, d)
    if spec.family == "armt":
        shapes["mem_wq"] = (big_l, spec.mem_key_dim, d)
        shapes["mem_wkvb"] = (big_l, spec.mem_key_dim + d + 1, d)
        shapes["mem_b_bias"] = (big_l,)
    return shapes


def _std(spec: ModelSpec, name: str) -> float:
    """Init scale: unit embeddings, std 0.02 projections, output projections scaled by 1/sqrt(2L).

    Unit-scale embeddings and small residual updates keep activations O(1) through many layers and
    segments; W_mv is small but nonzero (the reference zero-inits it) so the memory matters at once.
    """
    if name in ("embed", "memory"):
        return 1.0
    if name in ("wo", "w_down"):
        return 0.02 / math.sqrt(2 * spec.num_layers)
    return 0.02


def _draw(shape: tuple[int, ...], std: float, seed: int, name: str, layer: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{name}/{layer}".encode()))
    return torch.randn(shape, generator=generator, dtype=torch.float32) * std


def init_params(
    spec: ModelSpec,
    *,
    seed: int = 0,
    layers: range | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Random parameters for ``spec`` (only ``layers`` of the stacked ones; all layers by default)."""
    layers = range(spec.num_layers) if layers is None else layers
    ones = ("final_norm", "attn_norm", "mlp_norm")
    zeros = ("mem_b_bias",)
    params: dict[str, torch.Tensor] = {}
    for name, shape in param_shapes(spec).items():
        if name in GLOBAL_PARAMS:
            value = torch.ones(shape) if name in ones else _draw(shape, _std(spec, name), seed, name, -1)
        else:
            per_layer = shape[1:]
            rows = []
            for layer in layers:
                if name in ones:
                    rows.append(torch.ones(per_layer))
                elif name in zeros:
                    rows.append(torch.zeros(per_layer))
                else:
                    rows.append(_draw(per_layer, _std(spec, name), seed, name, layer))
            value = torch.stack(rows) if rows else torch.empty((0, *per_layer))
        params[name] = value.to(dtype=dtype, device=device)
    return params


def check_params(spec: ModelSpec, params: Mapping[str, torch.Tensor], layers: range) -> None:
    """Raise ``ValueError`` listing every missing, unexpected or mis-shaped tensor."""
    expected = param_shapes(spec)
    for name in LLAMA_LAYER_PARAMS + ARMT_LAYER_PARAMS:
        if name in expected:
            expected[name] = (len(layers), *expected[name][1:])
    problems = [f"missing {name} {list(shape)}" for name, shape in expected.items() if name not in params]
    problems += [f"unexpected {name}" for name in params if name not in expected]
    problems += [
        f"{name} has shape {list(params[name].shape)}, expected {list(shape)}"
        for name, shape in expected.items()
        if name in params and tuple(params[name].shape) != shape
    ]
    if problems:
        raise ValueError(f"parameters do not match model {spec.name!r}: " + "; ".join(problems))
