"""Kernel-by-kernel work of the built-in models: an ARMT or RMT cell, and a full-attention LLaMA layer.

The one cost description of the built-in models: the simulator's ``workload_from_spec`` and the torch
models' ``cell_kernels`` both read it, so a spec and the model built from it are costed alike, and the
kernel names are the ones calibration measures and hardware specs tabulate. It lives in ``specs``
because both ``sim`` and ``backends`` need it and neither may import the other.

Counts follow design notes sections 3 and 5. One cell is one LLaMA decoder layer on the segment's
``n = spec.tokens_per_cell(tokens)`` tokens (ARMT: T + M, RMT: T + 2M) with causal attention; ARMT adds
the associative read on all n tokens and the write from the M memory tokens. A multiply-add is 2 FLOPs;
elementwise ops count one FLOP per element per arithmetic operation (SiLU counts 4, softmax 5 per score).
Bytes are those a kernel reads and writes once (a flash-style attention never stores the n x n scores).
"""

from __future__ import annotations

from rmtsched.specs.cost import KernelWork
from rmtsched.specs.model import ModelSpec

# Output tile edge of a GPU GEMM and query block of a flash attention: 128 is the common choice of cuBLAS /
# CUTLASS bf16 kernels and of FlashAttention-2 on A100/H100 (``KernelWork.tiles``).
TILE = 128


def tiles(rows: int, cols: int) -> int:
    """128 x 128 output tiles of a rows x cols result (a GEMM's blocks of parallel work)."""
    return -(-rows // TILE) * -(-cols // TILE)


def causal_pairs(n: int) -> int:
    """(query, key) pairs a causal mask keeps on n tokens: n (n + 1) / 2."""
    return n * (n + 1) // 2


def causal_block_pairs(n: int) -> int:
    """(query, key) pairs a block-tiled causal attention computes on n tokens: every TILE-query block runs
    over whole TILE-key blocks up to and including its diagonal one (the masked half of that one is wasted)."""
    blocks = -(-n // TILE)
    return sum(min(TILE, n - i * TILE) * min(n, (i + 1) * TILE) for i in range(blocks))


def decoder_layer_kernels(spec: ModelSpec, n: int) -> list[KernelWork]:
    """A LLaMA decoder layer on n tokens: RMSNorm, QKV (GQA), rotary, causal attention, O, SwiGLU MLP."""
    d, kv, f, b = spec.d_model, spec.kv_dim, spec.mlp_dim, spec.dtype_bytes
    qkv = d + 2 * kv
    pairs = causal_pairs(n)
    return [
        KernelWork("attn_norm", 4 * n * d, d * b, 2 * n * d * b, matmul=False),
        KernelWork("qkv_proj", 2 * n * d * qkv, d * qkv * b, n * (d + qkv) * b, tiles=tiles(n, qkv)),
        # cos/sin tables are read once per token (head_dim each) and applied to q and k.
        KernelWork("rotary", 3 * n * (d + kv), 0, (2 * n * (d + kv) + 2 * n * spec.head_dim) * b, matmul=False),
        # QK^T and PV over the kept pairs (2 * d FLOPs per pair each) plus the softmax (5 per score per head).
        KernelWork(
            "attention", 4 * d * pairs + 5 * spec.num_heads * pairs, 0, n * (qkv + d) * b,
            tiles=tiles(n, TILE) * spec.num_heads, useful_fraction=pairs / causal_block_pairs(n),
        ),
        KernelWork("o_proj", 2 * n * d * d, d * d * b, 2 * n * d * b, tiles=tiles(n, d)),
        KernelWork("attn_residual", n * d, 0, 3 * n * d * b, matmul=False),
        KernelWork("mlp_norm", 4 * n * d, d * b, 2 * n * d * b, matmul=False),
        KernelWork("gate_up_proj", 2 * n * d * 2 * f, d * 2 * f * b, n * (d + 2 * f) * b, tiles=tiles(n, 2 * f)),
        KernelWork("swiglu", 5 * n * f, 0, 3 * n * f * b, matmul=False),
        KernelWork("down_proj", 2 * n * f * d, f * d * b, n * (f + d) * b, tiles=tiles(n, d)),
        KernelWork("mlp_residual", n * d, 0, 3 * n * d * b, matmul=False),
    ]


def associative_read_kernels(spec: ModelSpec, n: int) -> list[KernelWork]:
    """ARMT read on every token: q = W_q h, phi(q) by DPFP-nu, o = A^T phi / (z . phi + eps), h += o."""
    d, dm, phi, b = spec.d_model, spec.mem_key_dim, spec.phi_dim, spec.dtype_bytes
    return [
        KernelWork("mem_read_key", 2 * n * d * dm, d * dm * b, n * (d + dm) * b, tiles=tiles(n, dm)),
        # DPFP: relu(k), relu(-k) (2 dm), then nu products x * roll(x, i) (phi_dim).
        KernelWork("mem_read_phi", n * (2 * dm + phi), 0, n * (dm + phi) * b, matmul=False),
        KernelWork(
            "mem_read", 2 * n * phi * d + 2 * n * phi, 0, (phi * d + phi + n * phi + n * d + n) * b,
            tiles=tiles(n, d),
        ),
        KernelWork("mem_read_apply", 2 * n * d + n, 0, (3 * n * d + n) * b, matmul=False),
    ]


def associative_write_kernels(spec: ModelSpec) -> list[KernelWork]:
    """ARMT write from the M memory tokens: k, v, beta; v_prev; A += phi^T beta (v - v_prev); z += gamma phi."""
    m, d, dm, phi, b = spec.mem_tokens, spec.d_model, spec.mem_key_dim, spec.phi_dim, spec.dtype_bytes
    if m == 0:
        return []
    return [
        # W_k (d -> dm), W_v (d -> d) and W_beta (d -> 1) as one grouped projection of the memory tokens.
        KernelWork(
            "mem_write_proj", 2 * m * d * (dm + d + 1), d * (dm + d + 1) * b, m * (2 * d + dm + 1) * b,
            tiles=tiles(m, dm + d + 1),
        ),
        # DPFP of the keys plus the sigmoid of beta (4 FLOPs each).
        KernelWork("mem_write_phi", m * (2 * dm + phi) + 4 * m, 0, m * (dm + phi + 2) * b, matmul=False),
        KernelWork(
            "mem_write_prev", 2 * m * phi * d + 2 * m * phi + m * d, 0, (phi * d + phi + m * phi + m * d) * b,
            tiles=tiles(m, d),
        ),
        # Outer-product accumulation 2 M phi d, (v - v_prev) * beta 2 M d, A += 1 per entry,
        # gamma = 1 - (z . phi) / |phi|^2 (4 phi + 2 per token), z += gamma phi (2 phi per token).
        KernelWork(
            "mem_write_update",
            2 * m * phi * d + 2 * m * d + phi * d + m * (6 * phi + 2),
            0,
            (2 * phi * d + 2 * phi + m * phi + 2 * m * d + m) * b,
            tiles=tiles(phi, d),
        ),
    ]


def armt_cell_kernels(spec: ModelSpec, tokens: int) -> list[KernelWork]:
    """One cell of ``spec`` on a segment of ``tokens`` input tokens (memory tokens added here).

    ARMT: read + decoder layer on T + M tokens + write. RMT: the decoder layer on T + 2M tokens (its
    memory lives in the tokens themselves, so there is no associative read or write).
    """
    n = spec.tokens_per_cell(tokens)
    if spec.family == "rmt":
        return decoder_layer_kernels(spec, n)
    return [*associative_read_kernels(spec, n), *decoder_layer_kernels(spec, n), *associative_write_kernels(spec)]


def loss_kernels(spec: ModelSpec, tokens: int) -> list[KernelWork]:
    """A training segment's loss on its ``tokens`` outputs: the final RMSNorm, the LM head (V x d) and the
    cross-entropy over the V logits of each token (log-softmax and the pick: 5 FLOPs per logit)."""
    d, v, b = spec.d_model, spec.vocab_size, spec.dtype_bytes
    return [
        KernelWork("final_norm", 4 * tokens * d, d * b, 2 * tokens * d * b, matmul=False),
        KernelWork("lm_head", 2 * tokens * d * v, d * v * b, tokens * (d + v) * b, tiles=tiles(tokens, v)),
        KernelWork("cross_entropy", 5 * tokens * v, 0, 2 * tokens * v * b, matmul=False),
    ]


def full_attention_layer_kernels(spec: ModelSpec, num_tokens: int) -> list[KernelWork]:
    """The same LLaMA layer without memory on the whole N-token sequence (the full-attention baseline)."""
    return decoder_layer_kernels(spec, num_tokens)


def total_flops(kernels: list[KernelWork]) -> float:
    return float(sum(kernel.flops for kernel in kernels))


__all__ = [
    "TILE",
    "armt_cell_kernels",
    "associative_read_kernels",
    "associative_write_kernels",
    "causal_block_pairs",
    "causal_pairs",
    "decoder_layer_kernels",
    "full_attention_layer_kernels",
    "loss_kernels",
    "tiles",
    "total_flops",
]
