"""Every building block is batch-invariant: row i of a width-w call has the bits of the width-1 call.

Rows are drawn with odd sizes so that row i of a stacked tensor starts at a misaligned address and
element-wise kernels see different vector/scalar-tail splits at different widths: the two ways we saw
library kernels lose invariance on this CPU (``torch.sigmoid``/``F.silu`` tails, MKL GEMM alignment and
batched-GEMM kernel choice).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmtsched.backends.torch.kernels import (
    attention_rows,
    dpfp,
    dpfp_features,
    dpfp_index,
    l2_normalize,
    rms_norm,
    rotary_apply,
    rotary_tables,
    sigmoid,
    silu_mul,
)
from rmtsched.backends.torch.rowmm import ALIGN_BYTES, RowMatmul, aligned, aligned_rows

KERNEL_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WIDTHS = (2, 3, 5, 8)
dtypes = st.sampled_from((torch.float32, torch.float64))


def _randn(generator, *shape, dtype):
    return torch.randn(*shape, generator=generator, dtype=torch.float64).mul_(3).to(dtype)


def _assert_rows_invariant(fn, stacked_args, width):
    """fn(all rows)[i] == fn(row i alone)[0] for every i, bit for bit."""
    together = fn(*stacked_args)
    for i in range(width):
        alone = fn(*[arg[i : i + 1] for arg in stacked_args])
        assert torch.equal(together[i : i + 1], alone), f"row {i} of width {width} differs"


@KERNEL_SETTINGS
@given(rows=st.integers(1, 90), dim=st.integers(1, 130), dtype=dtypes, seed=st.integers(0, 999))
def test_elementwise_kernels_are_batch_invariant(rows: int, dim: int, dtype: torch.dtype, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for width in WIDTHS:
        x = _randn(generator, width, 2, rows, dim, dtype=dtype)
        y = _randn(generator, width, 2, rows, dim, dtype=dtype)
        weight = _randn(generator, width, 1, 1, dim, dtype=dtype)
        _assert_rows_invariant(lambda a, w: rms_norm(a, w, 1e-5), (x, weight), width)
        _assert_rows_invariant(sigmoid, (x,), width)
        _assert_rows_invariant(silu_mul, (x, y), width)
        _assert_rows_invariant(l2_normalize, (x,), width)
        _assert_rows_invariant(lambda a: torch.linalg.vector_norm(a, dim=-1).square_(), (x,), width)


@KERNEL_SETTINGS
@given(
    tokens=st.integers(1, 40), heads=st.integers(1, 4), half_dim=st.integers(1, 12), key_dim=st.integers(1, 9),
    dtype=dtypes, seed=st.integers(0, 999),
)
def test_rotary_and_dpfp_are_batch_invariant(
    tokens: int, heads: int, half_dim: int, key_dim: int, dtype: torch.dtype, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    cos, sin = rotary_tables(tokens, 2 * half_dim, 10000.0, dtype, torch.device("cpu"))
    left, right = dpfp_index(key_dim, 3, torch.device("cpu"))
    for width in WIDTHS:
        x = _randn(generator, width, 1, tokens, heads, 2 * half_dim, dtype=dtype)
        _assert_rows_invariant(lambda a: rotary_apply(a, cos[:, None], sin[:, None]), (x,), width)
        keys = _randn(generator, width, tokens, key_dim, dtype=dtype)
        _assert_rows_invariant(lambda a: dpfp(a, left, right), (keys,), width)
        _assert_rows_invariant(lambda a: dpfp_features(a, 3), (keys,), width)
        assert torch.equal(dpfp_features(keys, 3), dpfp(keys, left, right))


@KERNEL_SETTINGS
@given(
    batch=st.integers(1, 2), kv_heads=st.integers(1, 2), group=st.integers(1, 2), tokens=st.integers(1, 40),
    head_dim=st.sampled_from((2, 4, 6, 8, 16)), dtype=dtypes, seed=st.integers(0, 999),
)
def test_attention_rows_is_batch_invariant(
    batch: int, kv_heads: int, group: int, tokens: int, head_dim: int, dtype: torch.dtype, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    heads = kv_heads * group
    for width in WIDTHS:
        qkv = _randn(generator, width, batch, tokens, heads + 2 * kv_heads, head_dim, dtype=dtype)
        q = qkv[..., :heads, :].transpose(2, 3)
        k = qkv[..., heads : heads + kv_heads, :].transpose(2, 3)
        v = qkv[..., heads + kv_heads :, :].transpose(2, 3)

        _assert_rows_invariant(attention_rows, (q, k, v), width)
        _assert_rows_invariant(RowMatmul("auto").attention, (q, k, v), width)
        _assert_rows_invariant(lambda q, k, v: attention_rows(q, k, v, torch.empty_like(q)), (q, k, v), width)


@pytest.mark.parametrize("mode", ["auto", "rows"])
@KERNEL_SETTINGS
@given(
    m=st.integers(1, 70), k=st.integers(1, 70), n=st.integers(1, 70), inner=st.integers(1, 2),
    dtype=dtypes, seed=st.integers(0, 999),
)
def test_row_matmul_is_batch_invariant(
    mode: str, m: int, k: int, n: int, inner: int, dtype: torch.dtype, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    matmul = RowMatmul(mode)
    for width in WIDTHS:
        x = _randn(generator, width, m, k, dtype=dtype)
        weight = _randn(generator, width + 1, n, k, dtype=dtype)[1:]  # a slice of a stack, like params[l0:l1]
        _assert_rows_invariant(matmul.linear, (x, weight), width)
        a = _randn(generator, width, inner, m, k, dtype=dtype)
        b = _randn(generator, width, inner, k, n, dtype=dtype)
        _assert_rows_invariant(matmul.batched, (a, b), width)
        state = _randn(generator, width, inner, k, n, dtype=dtype)
        a_t = _randn(generator, width, inner, m, k, dtype=dtype).transpose(2, 3)
        update = _randn(generator, width, inner, m, n, dtype=dtype)
        together = matmul.accumulate_(state.clone(), a_t, update)
        for i in range(width):
            alone = matmul.accumulate_(state[i : i + 1].clone(), a_t[i : i + 1], update[i : i + 1])
            assert torch.equal(together[i : i + 1], alone)


@KERNEL_SETTINGS
@given(m=st.integers(1, 40), k=st.integers(1, 40), n=st.integers(1, 40), offset=st.integers(1, 7), dtype=dtypes)
def test_row_matmul_ignores_where_a_row_lives(m: int, k: int, n: int, offset: int, dtype: torch.dtype) -> None:
    """A row placed at a misaligned address gives the bits of the same row freshly allocated."""
    generator = torch.Generator().manual_seed(m * 10007 + k * 101 + n)
    x = _randn(generator, 1, m, k, dtype=dtype)
    weight = _randn(generator, 1, n, k, dtype=dtype)
    buffer = torch.empty(m * k + offset, dtype=dtype)
    shifted = buffer[offset:].view(1, m, k)
    shifted.copy_(x)
    assert shifted.data_ptr() % ALIGN_BYTES != 0
    matmul = RowMatmul("rows")
    assert torch.equal(matmul.linear(shifted, weight), matmul.linear(x, weight))


def test_aligned_helpers_place_rows_on_64_byte_boundaries() -> None:
    like = torch.empty(1, dtype=torch.float32)
    rows = aligned_rows(4, (3, 5), like)
    assert rows.shape == (4, 3, 5)
    assert all(row.data_ptr() % ALIGN_BYTES == 0 for row in rows.unbind(0))
    view = torch.arange(40.0)[3:].view(37)
    copy = aligned(view)
    assert copy.data_ptr() % ALIGN_BYTES == 0 and torch.equal(copy, view)
    fresh = torch.zeros(16)
    assert aligned(fresh) is fresh


def test_row_matmul_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="not one of"):
        RowMatmul("fast")
