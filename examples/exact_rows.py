"""Row-exact GEMMs and attention for plug-ins: every row of a width-w step gets the width-1 call's bits.

``rmtsched.backends.torch.RowMatmul`` makes row i of a batched GEMM equal the per-row library call.
One more thing decides the bits on CPU: the operand's address. MKL's GEMM and CPU SDPA take different
code paths for an operand that does not start on a 64-byte boundary (we measured it for torch.mm on
small fp32 shapes and for SDPA), and row i > 0 of a stacked ``[w, ...]`` tensor starts wherever
i * row_size lands, while the width-1 call's operand is a fresh, aligned tensor. ``aligned_rows``
copies activations into one canonical layout (contiguous rows, each on a 64-byte boundary) so that a
row looks the same to the library whatever w is. Weights need no copy: a layer's weights sit at the
same address in every step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rmtsched.backends.torch import RowMatmul

ALIGN_BYTES = 64  # PyTorch's CPU allocator aligns every fresh tensor to 64 bytes


def aligned_rows(x: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` ``[w, ...]``: row i contiguous and starting on a 64-byte boundary (padded row stride)."""
    per_row = x[0].numel()
    unit = max(1, ALIGN_BYTES // x.element_size())
    padded = -(-per_row // unit) * unit
    rows = x.new_empty(x.shape[0], padded)[:, :per_row].view(x.shape)
    return rows.copy_(x)


class AlignedRowMatmul(RowMatmul):
    """``RowMatmul`` whose activation operands are first put in the canonical row layout."""

    def linear(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return super().linear(aligned_rows(x), weight)

    def batched(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return super().batched(aligned_rows(a), aligned_rows(b))

    def accumulate_(self, c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return super().accumulate_(c, aligned_rows(a), aligned_rows(b))


def attention_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(e) + mask) v`` per row: ``q`` ``[w, B, H, n, e]``, ``k``/``v`` ``[w, B, H, m, e]``,
    boolean ``mask`` ``[w, n, m]`` (True = may attend). One SDPA call per row on aligned operands (SDPA
    over the stacked rows is not batch-invariant; the per-row call on the canonical layout is)."""
    q, k, v, mask = (aligned_rows(t) for t in (q, k, v, mask))
    out = q.new_empty(q.shape)
    for qi, ki, vi, mi, oi in zip(q.unbind(0), k.unbind(0), v.unbind(0), mask.unbind(0), out.unbind(0), strict=True):
        oi.copy_(F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mi))
    return out
