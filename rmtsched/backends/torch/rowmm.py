"""Row-wise GEMMs and attention that give every row the bits of the width-1 call, batched where proven safe.

``RowMatmul`` runs ``linear``, ``batched``, ``accumulate_`` and ``attention`` over a leading row dimension
(one layer's cell per row) in one of three modes: "rows" (the canonical per-row call on 64-byte-aligned
operands, at one intra-op thread where a layout's bits depend on the thread count), "batched" (one call),
or "auto" (one call only where a cached one-time probe of that exact call signature reproduced the
canonical bits). On CUDA with Triton installed, "auto" runs its GEMMs (not attention) at every width
through ``grouped_gemm``, a kernel that is batch-invariant by construction, so no row loops; its bits are
then its own, not cuBLAS's ("rows" mode keeps cuBLAS). ``RMTSCHED_GROUPED_GEMM=0`` or
``set_grouped_gemm(False)`` turns that off. Why each rule exists, what was measured and which tests prove
it: docs/exactness.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn.functional as F

from rmtsched.backends.torch import grouped_gemm
from rmtsched.backends.torch.threads import intra_op_threads

# Modes: "rows" (always canonical per-row calls: exact by construction), "batched" (always one call:
# fast, exact only where the library is batch-invariant), "auto" (batched where a probe proved it exact).
MODES = ("auto", "rows", "batched")
ALIGN_BYTES = 64
# A probe compares at least this many output elements (more draws for small outputs, where a kernel
# difference may touch only a few elements and agree by chance), with at least 3 and at most 64 draws.
_PROBE_ELEMENTS = 1 << 14
_PROBE_MAX_ELEMENTS = 1 << 26  # larger operands are not probed (their rows are big enough to run alone)
# How a call of one exact layout runs, decided once per process: one batched call, the canonical per-row
# calls, the per-row calls with one intra-op thread (a thread-sensitive row layout), or the batch-invariant
# grouped GEMM (CUDA, "auto" mode).
FLAT, ROWS, ROWS_ONE_THREAD, GROUPED = "flat", "rows", "rows/1-thread", "grouped"
_plans: dict[tuple, str] = {}
_thread_verdicts: dict[tuple, bool] = {}  # per row layout, so every step width shares one probe
_grouped_enabled = os.environ.get("RMTSCHED_GROUPED_GEMM", "1") != "0"


def set_grouped_gemm(enabled: bool) -> None:
    """Let "auto" mode use the Triton grouped GEMM on CUDA (the default) or not (cuBLAS, probed per layout).

    Forgets every cached plan, so change it between runs, not inside one: a run must make one choice for
    all its step widths to stay bit-exact.
    """
    global _grouped_enabled
    _grouped_enabled = bool(enabled)
    _plans.clear()


def aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` if it starts on a 64-byte boundary, else a copy with the same strides that does."""
    if t.data_ptr() % ALIGN_BYTES == 0:
        return t
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device).copy_(t)


def aligned_rows(rows: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An empty ``[rows, *shape]`` tensor whose rows each start on a 64-byte boundary (rows padded)."""
    per_row = 1
    for size in shape:
        per_row *= size
    quantum = max(1, ALIGN_BYTES // like.element_size())
    stride = -(-per_row // quantum) * quantum
    flat = like.new_empty(rows * stride)
    return flat.view(rows, stride)[:, :per_row].view(rows, *shape) if stride != per_row else flat.view(rows, *shape)


class RowMatmul:
    """GEMM-based kernels (matmuls, attention) over a leading row dimension whose row i equals the
    canonical width-1 call on row i."""

    def __init__(self, mode: str = "auto"):
        if mode not in MODES:
            raise ValueError(f"row matmul mode {mode!r} is not one of {MODES}")
        self.mode = mode

    # -- the three shapes of GEMM the models use --------------------------------------------------
    def linear(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``x[i] @ weight[i]^T``: ``x`` ``[w, m, k]``, ``weight`` ``[w, n, k]`` (nn.Linear layout)."""
        return self._run("linear", _mm_rows, _bmm_flat3, x, weight.transpose(1, 2))

    def batched(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a[i] @ b[i]`` with an inner batch: ``[w, B, m, k] @ [w, B, k, n] -> [w, B, m, n]``."""
        return self._run("batched", _bmm_rows, _bmm_flat4, a, b)

    def accumulate_(self, c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``c[i] += a[i] @ b[i]`` in place (``baddbmm_``), shapes as in ``batched``; ``c`` contiguous."""
        return self._run("accumulate", _baddbmm_rows_, _baddbmm_flat_, c, a, b)

    def accumulate(self, c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``c + a @ b`` as a new tensor, with ``accumulate_``'s bits (``GradRowMatmul`` has the same call)."""
        return self.accumulate_(c.contiguous().clone(), a, b)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Causal (grouped-query) SDPA per row: ``q`` ``[w, B, H, n, hd]``, ``k``/``v`` ``[w, B, K, n_kv, hd]``
        -> ``[w, B, H, n, hd]``. The canonical row is one SDPA call on that row's aligned operands.

        ``n_kv > n`` means the keys start with a KV cache: query i sits at position n_kv - n + i and sees
        keys 0..n_kv - n + i. Those calls run the canonical rows without a probe: the key length changes
        with every call, so probing each new layout would cost more than the call itself.
        """
        if k.shape[-2] != q.shape[-2]:
            return _sdpa_rows(q, k, v)
        return self._run("attention", _sdpa_rows, _sdpa_flat, q, k, v)

    # -- dispatch ----------------------------------------------------------------------------------
    def _run(self, name: str, per_row: Callable, flat: Callable, *operands: torch.Tensor) -> torch.Tensor:
        # The hot path: one key and one dict lookup per call; probes run only the first time a layout shows up.
        threads = torch.get_num_threads()
        key = (name, self.mode, threads, operands[0].device.type, *(_layout(t) for t in operands))
        plan = _plans.get(key)
        if plan is None:
            plan = _plans[key] = self._plan(name, per_row, flat, operands)
        if plan == FLAT:
            return flat(*operands)
        if plan == GROUPED:
            return _GROUPED[name](*operands)
        if plan == ROWS_ONE_THREAD:
            with intra_op_threads(1):
                return per_row(*operands)
        return per_row(*operands)

    def _plan(self, name: str, per_row: Callable, flat: Callable, operands: tuple[torch.Tensor, ...]) -> str:
        if self.mode == "batched":
            return FLAT if len(operands[0]) > 1 else ROWS
        # Never depends on the width: a width-1 call must take the same kernel as a width-w one.
        if self.mode == "auto" and name in _GROUPED and _grouped_enabled and grouped_gemm.applies(*operands):
            return GROUPED
        if not thread_exact(name, per_row, operands):
            return ROWS_ONE_THREAD
        if self.mode == "auto" and len(operands[0]) > 1 and _probe(per_row, flat, operands):
            return FLAT
        return ROWS


def thread_exact(name: str, per_row: Callable, operands: tuple[torch.Tensor, ...]) -> bool:
    """Whether ``per_row`` on one row of ``operands`` gives the 1-thread bits at the current intra-op thread
    count (always on one thread or off the CPU); probed once per row layout and thread count, cached."""
    threads = torch.get_num_threads()
    if threads == 1 or operands[0].device.type != "cpu":
        return True
    row_key = (name, threads, *(_row_layout(t) for t in operands))
    if row_key not in _thread_verdicts:
        _thread_verdicts[row_key] = _probe_threads(per_row, tuple(t[:1] for t in operands))
    return _thread_verdicts[row_key]


def _layout(t: torch.Tensor) -> tuple:
    return (tuple(t.shape), t.stride(), t.dtype, t.data_ptr() % ALIGN_BYTES)


def _row_layout(t: torch.Tensor) -> tuple:
    """What a per-row call sees of one row (rows are aligned before the call, so no address)."""
    return (tuple(t.shape[1:]), t.stride()[1:], t.dtype)


def _probe_like(t: torch.Tensor, generator: torch.Generator, draw: int) -> torch.Tensor:
    """A random tensor with ``t``'s shape, strides, dtype, device and address alignment (mod 64 bytes).

    Even draws are standard normal, odd ones scaled by 2^U(-4, 4) per element: comparable magnitudes,
    so a different summation order shows up in the last bits. (Very wide ranges hide it: large terms
    absorb the small ones, and softmax saturates to one-hot rows.)
    """
    elem = t.element_size()
    quantum = ALIGN_BYTES // elem
    span = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(), strict=True))
    flat = torch.empty(span + quantum, dtype=t.dtype, device=t.device)
    shift = (t.data_ptr() % ALIGN_BYTES - flat.data_ptr() % ALIGN_BYTES) // elem % quantum
    # Drawn where ``t`` lives (the generator's device): drawing a GPU operand's 10^7 values on the CPU and
    # copying them over made probing a LLaMA-160m run on an H200 take over a minute.
    values = torch.randn(span, generator=generator, dtype=torch.float64, device=t.device)
    if draw % 2:
        values *= torch.exp2(torch.randint(-4, 5, (span,), generator=generator, device=t.device).to(torch.float64))
    flat[shift : shift + span].copy_(values)
    return flat.as_strided(t.shape, t.stride(), shift)


def _probe(per_row: Callable, flat: Callable, operands: tuple[torch.Tensor, ...]) -> bool:
    """Whether ``flat`` reproduces ``per_row`` bit for bit on random operands of this exact layout."""
    if any(t.numel() > _PROBE_MAX_ELEMENTS for t in operands):
        return False
    return _agree(per_row, flat, operands)


def _probe_threads(per_row: Callable, row: tuple[torch.Tensor, ...]) -> bool:
    """Whether ``per_row`` on one row gives the same bits at the current thread count as at one thread.

    Large operands are not probed: they are assumed thread-invariant (the shapes that differed here are
    small) and checked end to end by the tests that compare thread counts.
    """
    if any(t.numel() > _PROBE_MAX_ELEMENTS for t in row):
        return True

    def single_threaded(*operands: torch.Tensor) -> torch.Tensor:
        with intra_op_threads(1):
            return per_row(*operands)

    return _agree(single_threaded, per_row, row)


def _agree(expected_fn: Callable, candidate_fn: Callable, operands: tuple[torch.Tensor, ...]) -> bool:
    """Both calls give identical bits on 3 to 64 random draws shaped (strides, alignment) like ``operands``."""
    generator = torch.Generator(device=operands[0].device).manual_seed(0)
    in_place = _is_in_place(expected_fn, candidate_fn)
    out_elements = operands[0].numel() if in_place else expected_fn(*operands).numel()
    draws = min(64, max(3, -(-_PROBE_ELEMENTS // max(1, out_elements))))
    for draw in range(draws):
        fakes = [_probe_like(t, generator, draw) for t in operands]
        if in_place:
            expected, got = fakes[0].clone(), fakes[0].clone()
            expected_fn(expected, *fakes[1:])
            candidate_fn(got, *fakes[1:])
        else:
            expected, got = expected_fn(*fakes), candidate_fn(*fakes)
        if not torch.equal(expected, got):
            return False
    return True


def _is_in_place(*fns: Callable) -> bool:
    """The accumulate kernels write into their first operand (``c += a @ b``)."""
    return any(fn in (_baddbmm_rows_, _baddbmm_flat_) for fn in fns)


# -- canonical per-row calls ------------------------------------------------------------------------
def _mm_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = aligned_rows(len(a), (a.shape[1], b.shape[2]), a)
    for ai, bi, oi in zip(a.unbind(0), b.unbind(0), out.unbind(0), strict=True):
        torch.mm(aligned(ai), aligned(bi), out=oi)
    return out


def _bmm_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = aligned_rows(len(a), (*a.shape[1:-1], b.shape[-1]), a)
    for ai, bi, oi in zip(a.unbind(0), b.unbind(0), out.unbind(0), strict=True):
        torch.bmm(aligned(ai), aligned(bi), out=oi)
    return out


def _baddbmm_rows_(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    for ci, ai, bi in zip(c.unbind(0), a.unbind(0), b.unbind(0), strict=True):
        target = aligned(ci)
        target.baddbmm_(aligned(ai), aligned(bi))
        if target is not ci:
            ci.copy_(target)
    return c


def _causal(q: torch.Tensor, k: torch.Tensor) -> dict:
    """SDPA's causal arguments with the queries aligned to the LAST keys (a KV cache holds the first ones).

    SDPA's ``is_causal`` aligns them to the first keys, so it serves only the equal-length case.
    """
    n, n_kv = q.shape[-2], k.shape[-2]
    if n == n_kv:
        return {"is_causal": True}
    if n == 1:  # one new token sees every key
        return {}
    return {"attn_mask": torch.ones(n, n_kv, dtype=torch.bool, device=q.device).tril_(n_kv - n)}


def _sdpa_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    gqa = q.shape[2] != k.shape[2]
    causal = _causal(q, k)
    rows = [
        F.scaled_dot_product_attention(aligned(qi), aligned(ki), aligned(vi), enable_gqa=gqa, **causal)
        for qi, ki, vi in zip(q.unbind(0), k.unbind(0), v.unbind(0), strict=True)
    ]
    return rows[0].unsqueeze(0) if len(rows) == 1 else torch.stack(rows)


# -- one batched call over all rows ------------------------------------------------------------------
def _sdpa_flat(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    out = F.scaled_dot_product_attention(
        q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), is_causal=True, enable_gqa=q.shape[2] != k.shape[2]
    )
    return out.unflatten(0, q.shape[:2])


def _bmm_flat3(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.bmm(a, b)


def _bmm_flat4(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.bmm(a.flatten(0, 1), b.flatten(0, 1)).unflatten(0, a.shape[:2])


def _baddbmm_flat_(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    c.view(-1, *c.shape[2:]).baddbmm_(a.flatten(0, 1), b.flatten(0, 1))
    return c


# -- the batch-invariant grouped GEMM (CUDA + Triton) --------------------------------------------------
def _linear_grouped(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return grouped_gemm.grouped_gemm(a.unsqueeze(1), b.unsqueeze(1)).squeeze(1)


def _batched_grouped(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return grouped_gemm.grouped_gemm(a, b)


def _accumulate_grouped_(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return grouped_gemm.grouped_gemm(a, b, c, accumulate=True)


_GROUPED: dict[str, Callable[..., torch.Tensor]] = {
    "linear": _linear_grouped, "batched": _batched_grouped, "accumulate": _accumulate_grouped_,
}
