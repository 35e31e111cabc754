"""The built-in models' cell cost, kernel by kernel (``KernelWork``), for the simulator.

Counts follow the kernels ``layers.py`` and ``armt.py`` launch: a GEMM is 2 m k n FLOPs and reads its
weights once; causal attention counts the lower triangle; element-wise kernels count a few FLOPs per
element and their bytes in and out. ``tokens`` is the segment's T; a cell attends over
``spec.tokens_per_cell(T)`` tokens (T + M for ARMT, T + 2M for RMT).
"""

from __future__ import annotations

from rmtsched.specs.cost import KernelWork
from rmtsched.specs.model import ModelSpec


def _gemm(name: str, m: int, k: int, n: int, nbytes: int) -> KernelWork:
    return KernelWork(name, 2.0 * m * k * n, weight_bytes=k * n * nbytes, activation_bytes=(m * k + m * n) * nbytes)


def _elementwise(name: str, elements: int, flops_per_element: float, nbytes: int, weights: int = 0) -> KernelWork:
    return KernelWork(
        name, flops_per_element * elements, weight_bytes=weights * nbytes,
        activation_bytes=2 * elements * nbytes, matmul=False,
    )


def cell_kernels(spec: ModelSpec, tokens: int) -> list[KernelWork]:
    """Kernels of one cell (one layer, one segment of ``tokens`` input tokens), batch size 1."""
    n = spec.tokens_per_cell(tokens)
    d, hd, b = spec.d_model, spec.head_dim, spec.dtype_bytes
    heads, kv_heads, mlp = spec.num_heads, spec.num_kv_heads, spec.mlp_dim
    causal_pairs = n * (n + 1) / 2
    kernels = [
        _elementwise("attn_norm", n * d, 4, b, weights=d),
        _gemm("qkv_proj", n, d, (heads + 2 * kv_heads) * hd, b),
        _elementwise("rotary", n * (heads + kv_heads) * hd, 3, b),
        KernelWork(
            "attention", 4.0 * heads * hd * causal_pairs,
            activation_bytes=(2 * heads + 2 * kv_heads) * n * hd * b,
        ),
        _gemm("o_proj", n, heads * hd, d, b),
        _elementwise("mlp_norm", n * d, 4, b, weights=d),
        _gemm("gate_up_proj", n, d, 2 * mlp, b),
        _elementwise("silu_mul", n * mlp, 5, b),
        _gemm("down_proj", n, mlp, d, b),
    ]
    if spec.family == "armt":
        phi, key_dim, mem = spec.phi_dim, spec.mem_key_dim, spec.mem_tokens
        state_bytes = phi * (d + 1) * b
        kernels += [
            _gemm("mem_query_proj", n, d, key_dim, b),
            _elementwise("dpfp_read", n * phi, 3, b),
            KernelWork("assoc_read", 2.0 * n * phi * (d + 1), activation_bytes=state_bytes + n * (phi + d) * b),
        ]
        if mem:
            kernels += [
                _gemm("mem_write_proj", mem, d, key_dim + d + 1, b),
                _elementwise("dpfp_write", mem * phi, 3, b),
                KernelWork(
                    "assoc_write", 4.0 * mem * phi * (d + 1),
                    activation_bytes=3 * state_bytes + mem * (phi + 2 * d) * b,
                ),
            ]
    return kernels
