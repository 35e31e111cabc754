"""Row-wise GEMMs that give every row the bits of the width-1 call, batched where that is proven safe.

A step of width w multiplies each layer row by its own weights. The *canonical* result of row i is the
library call a width-1 step makes (``torch.mm`` / ``torch.bmm`` / ``baddbmm_`` on that row alone).
One batched call over all rows is faster, but MKL's batched GEMM picks different kernels for some
shapes and dtypes (we measured differences on fp64 and odd fp32 shapes), so it is not batch-invariant
in general. ``RowMatmul`` therefore probes each call signature once — shapes, strides, dtype, device,
thread count and operand alignment, which is everything the library's choice of kernel can depend on —
with random operands of that exact layout, and uses the batched call only if it reproduces the per-row
bits on several draws; otherwise it loops over rows. Verdicts are cached per process.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Modes: "rows" (always one call per row: exact by construction), "batched" (always one call: fast,
# exact only where the library is batch-invariant), "auto" (batched where a probe proved it exact).
MODES = ("auto", "rows", "batched")
_PROBE_DRAWS = 3
_PROBE_MAX_ELEMENTS = 1 << 26  # larger operands are not probed (their rows are big enough to run alone)
_verdicts: dict[tuple, bool] = {}


def _layout(t: torch.Tensor) -> tuple:
    return (tuple(t.shape), t.stride(), t.dtype, t.data_ptr() % 64 // t.element_size())


def _probe_like(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random tensor with ``t``'s shape, strides, dtype, device and address alignment (mod 64 bytes).

    Magnitudes span many binades so that two kernels summing in different orders round differently.
    """
    elem = t.element_size()
    span = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(), strict=True))
    offset = t.data_ptr() % 64 // elem
    flat = torch.empty(span + 64 // elem, dtype=t.dtype, device=t.device)
    shift = (offset - flat.data_ptr() % 64 // elem) % (64 // elem)
    values = torch.randn(span, generator=generator, dtype=torch.float64)
    scales = torch.exp2(torch.randint(-12, 13, (span,), generator=generator).to(torch.float64))
    flat[shift : shift + span].copy_(values * scales)
    return flat.as_strided(t.shape, t.stride(), shift)


class RowMatmul:
    """GEMMs over a leading row dimension whose row i equals the width-1 call on row i, bit for bit."""

    def __init__(self, mode: str = "auto"):
        if mode not in MODES:
            raise ValueError(f"row matmul mode {mode!r} is not one of {MODES}")
        self.mode = mode

    # -- the three shapes of GEMM the models use --------------------------------------------------
    def linear(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``x[i] @ weight[i]^T``: ``x`` ``[w, m, k]``, ``weight`` ``[w, n, k]`` (nn.Linear layout)."""
        wt = weight.transpose(1, 2)
        return self._run("linear", _mm_rows, torch.bmm, x, wt)

    def batched(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a[i] @ b[i]`` with an inner batch: ``[w, B, m, k] @ [w, B, k, n] -> [w, B, m, n]``."""
        return self._run("batched", _bmm_rows, _bmm_flat, a, b)

    def accumulate_(self, c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``c[i] += a[i] @ b[i]`` in place (``baddbmm_``), shapes as in ``batched``; ``c`` contiguous."""
        rows = len(c)
        if rows == 1 or not self._batched_ok("accumulate", _baddbmm_rows_, _baddbmm_flat_, c, a, b):
            return _baddbmm_rows_(c, a, b)
        return _baddbmm_flat_(c, a, b)

    # -- dispatch ----------------------------------------------------------------------------------
    def _run(self, name: str, per_row: Callable, flat: Callable, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if len(a) == 1 or not self._batched_ok(name, per_row, flat, a, b):
            return per_row(a, b)
        return flat(a, b)

    def _batched_ok(self, name: str, per_row: Callable, flat: Callable, *operands: torch.Tensor) -> bool:
        if self.mode != "auto":
            return self.mode == "batched"
        key = (name, torch.get_num_threads(), operands[0].device.type, *(_layout(t) for t in operands))
        verdict = _verdicts.get(key)
        if verdict is None:
            verdict = _verdicts[key] = _probe(per_row, flat, operands)
        return verdict


def _probe(per_row: Callable, flat: Callable, operands: tuple[torch.Tensor, ...]) -> bool:
    if any(t.numel() > _PROBE_MAX_ELEMENTS for t in operands):
        return False
    generator = torch.Generator().manual_seed(0)
    for _ in range(_PROBE_DRAWS):
        fakes = [_probe_like(t, generator) for t in operands]
        if per_row is _baddbmm_rows_:
            expected, got = fakes[0].clone(), fakes[0].clone()
            per_row(expected, *fakes[1:])
            flat(got, *fakes[1:])
        else:
            expected, got = per_row(*fakes), flat(*fakes)
        if not torch.equal(expected, got):
            return False
    return True


def _mm_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = a.new_empty(len(a), a.shape[1], b.shape[2])
    for ai, bi, oi in zip(a.unbind(0), b.unbind(0), out.unbind(0), strict=True):
        torch.mm(ai, bi, out=oi)
    return out


def _bmm_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = a.new_empty(*a.shape[:-1], b.shape[-1])
    for ai, bi, oi in zip(a.unbind(0), b.unbind(0), out.unbind(0), strict=True):
        torch.bmm(ai, bi, out=oi)
    return out


def _bmm_flat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.bmm(a.flatten(0, 1), b.flatten(0, 1)).unflatten(0, a.shape[:2])


def _baddbmm_rows_(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    for ci, ai, bi in zip(c.unbind(0), a.unbind(0), b.unbind(0), strict=True):
        ci.baddbmm_(ai, bi)
    return c


def _baddbmm_flat_(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    c.view(-1, *c.shape[2:]).baddbmm_(a.flatten(0, 1), b.flatten(0, 1))
    return c


def row_matmul(mode: str = "auto") -> RowMatmul:
    """A ``RowMatmul`` in ``mode`` ("auto", "rows" or "batched")."""
    return RowMatmul(mode)
