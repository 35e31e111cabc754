"""Differentiable row-wise kernels: ``RowMatmul``'s GEMMs with backward GEMMs that are row-exact too.

A training step of width w runs w cells (one layer each) as rows of one batched graph. Its gradients equal
w width-1 graphs bit for bit only if every backward kernel gives row i the bits of the width-1 call, as
the forward kernels do. Autograd's own backward of a batched matmul does not promise that, so the GEMMs
here are autograd functions whose backward products run through the same ``RowMatmul`` (one batched call
where a probe proved it row-exact, else the canonical per-row calls):

* ``linear``: ``y = x W^T`` -> ``dx = dy W``, ``dW = dy^T x``;
* ``batched``: ``c = a b`` -> ``da = dc b^T``, ``db = a^T dc``;
* ``accumulate``: ``c' = c + a b`` (out of place) -> ``dc = dc'``, and ``da``, ``db`` as ``batched``;
* ``attention``: per row, with autograd's own SDPA backward on that row (rebuilt from q, k, v);
* ``dense``: one weight for all of ``x`` (a cell's LM head), as a width-1 ``linear``;
* ``scale_rows`` / ``shift_rows``: ``x * weight`` / ``x + bias`` with a weight per row, whose weight
  gradient sums each row on its own (autograd would reduce all rows in one call).

Element-wise work and last-dim reductions need nothing: autograd runs them per element or per row.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from rmtsched.backends.torch.rowmm import RowMatmul, aligned, thread_exact
from rmtsched.backends.torch.threads import intra_op_threads


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, matmul: RowMatmul, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.matmul = matmul
        ctx.save_for_backward(x, weight)
        return matmul.linear(x, weight)  # [w, m, n]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        matmul = ctx.matmul
        grad_x = matmul.linear(grad, weight.transpose(1, 2)) if ctx.needs_input_grad[1] else None  # dy W
        grad_w = matmul.linear(grad.transpose(1, 2), x.transpose(1, 2)) if ctx.needs_input_grad[2] else None
        return None, grad_x, grad_w


class _Batched(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, matmul: RowMatmul, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.matmul = matmul
        ctx.save_for_backward(a, b)
        return matmul.batched(a, b)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor | None, torch.Tensor | None]:
        a, b = ctx.saved_tensors
        return None, *_batched_grads(ctx, grad, a, b, 1)


class _Accumulate(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, matmul: RowMatmul, c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.matmul = matmul
        ctx.save_for_backward(a, b)
        return matmul.accumulate(c, a, b)  # the in-place kernel's bits, on a copy

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        a, b = ctx.saved_tensors
        return None, grad if ctx.needs_input_grad[1] else None, *_batched_grads(ctx, grad, a, b, 2)


def _batched_grads(
    ctx: Any, grad: torch.Tensor, a: torch.Tensor, b: torch.Tensor, first: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``da = grad b^T`` and ``db = a^T grad`` for the inputs that need them (``first``: index of ``a``)."""
    matmul = ctx.matmul
    grad_a = matmul.batched(grad, b.transpose(-1, -2)) if ctx.needs_input_grad[first] else None
    grad_b = matmul.batched(a.transpose(-1, -2), grad) if ctx.needs_input_grad[first + 1] else None
    return grad_a, grad_b


class _Attention(torch.autograd.Function):
    """Causal SDPA row by row. The backward rebuilds each row's SDPA graph from the saved q, k, v and runs
    autograd's SDPA backward on it: one more attention forward, and nothing but the inputs kept. SDPA's
    CPU backward rounds differently at 1 and 2 threads for some shapes, so a layout whose probe shows it
    runs at one thread (``rowmm.thread_exact``), forward included."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(q, k, v)
        with _attention_threads(q, k, v), torch.enable_grad():  # the kernel the backward's rebuild picks
            return torch.stack([out.detach() for _, out in _attention_rows(q, k, v)])  # [w, B, H, n, hd]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = ctx.saved_tensors
        with _attention_threads(q, k, v), torch.enable_grad():
            rows = _attention_rows(q, k, v)
            grads = [torch.autograd.grad(out, leaves, grad_row)
                     for (leaves, out), grad_row in zip(rows, grad.unbind(0), strict=True)]
        return tuple(torch.stack(parts) for parts in zip(*grads, strict=True))  # type: ignore[return-value]


def _attention_rows(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
    """Each row's SDPA on fresh aligned leaves (``RowMatmul``'s canonical row), with its autograd graph."""
    gqa = q.shape[2] != k.shape[2]
    rows = []
    for qi, ki, vi in zip(q.unbind(0), k.unbind(0), v.unbind(0), strict=True):
        leaves = [aligned(t.detach()).requires_grad_() for t in (qi, ki, vi)]
        rows.append((leaves, F.scaled_dot_product_attention(*leaves, is_causal=True, enable_gqa=gqa)))
    return rows


def _attention_forward_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One row's output and its q, k, v gradients (for a fixed upstream gradient), flattened: what the
    thread probe compares."""
    with torch.enable_grad():
        ((leaves, out),) = _attention_rows(q, k, v)
        upstream = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype, device=out.device).view(out.shape)
        grads = torch.autograd.grad(out, leaves, upstream)
    return torch.cat([out.detach().flatten(), *(g.flatten() for g in grads)])


def _attention_threads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> AbstractContextManager[Any]:
    """One intra-op thread where this layout's SDPA forward or backward differs from its 1-thread bits."""
    if thread_exact("attention-train", _attention_forward_backward, (q, k, v)):
        return nullcontext()
    return intra_op_threads(1)


class _ScaleRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return x * weight

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_x = grad * weight if ctx.needs_input_grad[0] else None
        grad_w = _row_sums(grad * x, weight) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w


class _ShiftRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(bias)
        return x + bias

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        (bias,) = ctx.saved_tensors
        return grad if ctx.needs_input_grad[0] else None, _row_sums(grad, bias) if ctx.needs_input_grad[1] else None


def _row_sums(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values`` ``[w, ...]`` summed down to ``like``'s shape ``[w, 1.., d or 1]``, one row at a time."""
    shape = like.shape[1:]
    return torch.stack([row.sum_to_size(shape) for row in values.unbind(0)])


class GradRowMatmul:
    """``RowMatmul``'s interface (``linear``, ``batched``, ``attention``) for autograd, plus the out-of-place
    ``accumulate`` a training cell needs; forward bits are ``RowMatmul``'s, backward rows are row-exact."""

    def __init__(self, matmul: RowMatmul):
        self.matmul = matmul

    def linear(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return _Linear.apply(self.matmul, x, weight)

    def batched(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _Batched.apply(self.matmul, a, b)

    def dense(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``F.linear(x, weight)`` for ONE weight ``[n, k]`` and ``x`` ``[..., k]``, as a width-1 ``linear``: its
        backward is then thread-exact too (``F.linear``'s backward rounds differently at 1 and 2 threads for
        some small shapes). For a cell's ends, e.g. the LM head."""
        out = self.linear(x.reshape(1, -1, x.shape[-1]), weight.unsqueeze(0))  # [1, prod(...), n]
        return out.view(*x.shape[:-1], weight.shape[0])

    def accumulate(self, c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``c + a @ b`` as a new tensor, with the bits of ``RowMatmul.accumulate_``."""
        return _Accumulate.apply(self.matmul, c, a, b)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if k.shape[-2] != q.shape[-2]:
            raise ValueError("training attention takes no KV cache: queries and keys must have equal lengths")
        return _Attention.apply(q, k, v)


def scale_rows(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x * weight`` where ``weight`` ``[w, 1.., d]`` holds one row's weight per row of ``x``."""
    return _ScaleRows.apply(x, weight)


def shift_rows(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x + bias`` where ``bias`` ``[w, 1..]`` holds one row's bias per row of ``x``."""
    return _ShiftRows.apply(x, bias)


__all__ = ["GradRowMatmul", "scale_rows", "shift_rows"]
