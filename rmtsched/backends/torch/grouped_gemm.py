"""A batch-invariant grouped GEMM for CUDA (Triton): ``c[g] (+)= a[g] @ b[g]`` for every group g.

cuBLAS picks its kernel (tile shape, split-K) from the whole batched call, so row i of a width-w call can
get other bits than the width-1 call (docs/exactness.md). Here every output tile of every group is one
Triton program whose tile shape depends only on that group's ``(m, n, k, dtype)`` (``tile_config``), with
no split-K and no atomics: it walks k in the same order, tile by tile, whatever the number of groups, so a
group's bits cannot depend on how many groups run with it. ``RowMatmul``'s "auto" mode uses it for its
GEMMs on CUDA instead of probing cuBLAS and looping rows. Triton is optional: ``available()`` says whether
it imports, and nothing here imports it before a kernel is first needed.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass

import torch

# Dtypes the kernel takes; fp32 multiplies in full IEEE fp32 (no TF32: torch's default for matmuls too).
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_GROUPS = 65535  # CUDA's limit on grid dimension 1 (one program row per group)


class GroupedGemmUnavailable(RuntimeError):
    """The grouped GEMM was called where it cannot run (no Triton, or an operand it does not take)."""


@dataclass(frozen=True)
class TileConfig:
    """One output tile per program: ``block_m x block_n``, k walked ``block_k`` at a time, in order."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


def tile_config(m: int, n: int, k: int, dtype: torch.dtype) -> TileConfig:
    """The tile shape for one group's ``[m, k] @ [k, n]``: a function of that problem alone, never of the
    number of groups, which is what makes the kernel batch-invariant."""
    if dtype == torch.float32:
        return TileConfig(64, 64, 32, num_warps=4, num_stages=2)
    if m >= 128 and n >= 128:
        return TileConfig(128, 128, 64, num_warps=8, num_stages=3)
    return TileConfig(64, 64, 64, num_warps=4, num_stages=3)


@functools.cache
def available() -> bool:
    """Whether Triton imports (an optional dependency: CUDA machines usually have it). Asked only for CUDA
    operands, so a CPU-only process never imports it."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
    except Exception:  # a broken install counts as none: "auto" then probes cuBLAS as before
        return False
    return True


def applies(*operands: torch.Tensor) -> bool:
    """Whether ``grouped_gemm`` takes these operands: CUDA tensors of one supported dtype, Triton present.

    The answer depends on device, dtype and Triton alone (never on a shape), so every step width of a run
    makes the same choice, which is what keeps the schedules bit-identical.
    """
    first = operands[0]
    return (
        first.device.type == "cuda"
        and first.dtype in DTYPES
        and all(t.dtype == first.dtype and t.device == first.device for t in operands)
        and available()
    )


def grouped_gemm(
    a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None, *, accumulate: bool = False
) -> torch.Tensor:
    """``out[i, j] = a[i, j] @ b[i, j]`` (or ``out[i, j] += ...`` with ``accumulate``) over two group dims.

    ``a`` ``[G1, G2, m, k]``, ``b`` ``[G1, G2, k, n]``, any strides (a transposed weight is fine); ``out``
    ``[G1, G2, m, n]`` is allocated (contiguous) unless given. Products accumulate in fp32 and round once.
    """
    _check(a, b, out, accumulate)
    g1, g2, m, k = a.shape
    n = b.shape[3]
    if out is None:
        out = torch.empty((g1, g2, m, n), dtype=a.dtype, device=a.device)
    if out.numel() == 0:
        return out
    if k == 0:  # an empty sum: the kernel's k loop would not run, but say it plainly
        return out if accumulate else out.zero_()
    tiles = tile_config(m, n, k, a.dtype)
    grid = (_cdiv(m, tiles.block_m) * _cdiv(n, tiles.block_n), g1 * g2)
    _kernel()[grid](
        a, b, out, m, n, g2,
        *a.stride(), *b.stride(), *out.stride(),
        K=k, ACCUMULATE=accumulate, PRECISION=_precision(a.dtype),
        BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n, BLOCK_K=tiles.block_k, SWIZZLE=8,
        num_warps=tiles.num_warps, num_stages=tiles.num_stages,
    )
    return out


def _precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s input precision: full fp32 products for fp32 (Triton's default rounds them to TF32);
    16-bit inputs multiply exactly in either setting, so they keep the default."""
    return "ieee" if dtype == torch.float32 else "tf32"


def _cdiv(x: int, y: int) -> int:
    return -(-x // y)


def _check(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None, accumulate: bool) -> None:
    if not available():
        raise GroupedGemmUnavailable("the grouped GEMM needs Triton, which is not installed")
    if a.dim() != 4 or b.dim() != 4 or a.shape[:2] != b.shape[:2] or a.shape[3] != b.shape[2]:
        raise ValueError(f"grouped_gemm needs a [G1, G2, m, k] and b [G1, G2, k, n], got {list(a.shape)} and "
                         f"{list(b.shape)}")
    if a.dtype not in DTYPES or a.dtype != b.dtype:
        raise ValueError(f"grouped_gemm takes two operands of one dtype in {DTYPES}, got {a.dtype} and {b.dtype}")
    if a.shape[0] * a.shape[1] > _MAX_GROUPS:
        raise ValueError(f"grouped_gemm runs at most {_MAX_GROUPS} groups, got {a.shape[0] * a.shape[1]}")
    expected = (*a.shape[:3], b.shape[3])
    if out is None:
        if accumulate:
            raise ValueError("accumulate=True needs the out tensor to add to")
        return
    if tuple(out.shape) != expected or out.dtype != a.dtype or out.device != a.device:
        raise ValueError(f"grouped_gemm out must be {list(expected)} {a.dtype} on {a.device}, got "
                         f"{list(out.shape)} {out.dtype} on {out.device}")


@functools.cache
def _kernel():  # a triton.JITFunction: triton is imported only here
    """Build the Triton kernel on first use (``TRITON_INTERPRET=1`` at that moment runs it on the CPU)."""
    import triton
    import triton.language as tl

    @triton.jit
    def grouped_gemm_kernel(
        a_ptr, b_ptr, c_ptr, M, N, G2,
        sa1, sa2, sam, sak, sb1, sb2, sbk, sbn, sc1, sc2, scm, scn,
        K: tl.constexpr, ACCUMULATE: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SWIZZLE: tl.constexpr,
    ):
        # K is a compile-time constant (a model has a handful of inner sizes): the k loop's trip count is known,
        # and Triton 3.6's CPU interpreter cannot loop over a run-time scalar with numpy >= 2.4.
        # Program (tile, g): tile of group g = (g1, g2). Nothing a program computes depends on the grid size.
        tile = tl.program_id(0)
        group = tl.program_id(1).to(tl.int64)
        g1 = group // G2
        g2 = group % G2
        # Tiles in bands of SWIZZLE row blocks, column by column, so that programs running at once share
        # b's column blocks in L2 (the order changes no tile's arithmetic).
        tiles_m = tl.cdiv(M, BLOCK_M)
        tiles_n = tl.cdiv(N, BLOCK_N)
        band = tile // (SWIZZLE * tiles_n)
        band_rows = tl.minimum(tiles_m - band * SWIZZLE, SWIZZLE)
        within = tile % (SWIZZLE * tiles_n)
        # 64-bit offsets: one group's rows x row stride can pass 2^31 (131k tokens x a 16k-wide output).
        rows = ((band * SWIZZLE + within % band_rows) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        cols = ((within // band_rows) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        ks = tl.arange(0, BLOCK_K)
        a_tile = a_ptr + g1 * sa1 + g2 * sa2 + rows[:, None] * sam + ks[None, :] * sak
        b_tile = b_ptr + g1 * sb1 + g2 * sb2 + ks[:, None] * sbk + cols[None, :] * sbn
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):  # fixed order, no split-K: the same sum for every group count
            a = tl.load(a_tile, mask=(rows[:, None] < M) & (ks[None, :] + k0 < K), other=0.0)
            b = tl.load(b_tile, mask=(ks[:, None] + k0 < K) & (cols[None, :] < N), other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
            a_tile += BLOCK_K * sak
            b_tile += BLOCK_K * sbk
        c_tile = c_ptr + g1 * sc1 + g2 * sc2 + rows[:, None] * scm + cols[None, :] * scn
        inside = (rows[:, None] < M) & (cols[None, :] < N)
        if ACCUMULATE:
            acc += tl.load(c_tile, mask=inside, other=0.0).to(tl.float32)
        tl.store(c_tile, acc.to(c_ptr.dtype.element_ty), mask=inside)

    return grouped_gemm_kernel
