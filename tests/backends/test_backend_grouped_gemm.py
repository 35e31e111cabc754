"""The Triton grouped GEMM: row i's bits do not depend on how many rows run with it, and "auto" mode uses it
on CUDA (and never elsewhere).

Three tiers: without Triton (as in CI) the package still imports and says plainly it cannot run the kernel;
with Triton on a CPU-only machine its interpreter (``TRITON_INTERPRET=1``, set here before Triton is first
imported) runs the kernel in fp32 and fp16 (the interpreter mishandles bf16); with a CUDA device the
compiled kernel runs in bf16 too. Values are checked against an fp64 ``torch`` product.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch
from backend_helpers import build_model, execute, random_inputs

from rmtsched.backends.torch import grouped_gemm, rowmm
from rmtsched.backends.torch.rowmm import GROUPED, RowMatmul
from rmtsched.sched import graph_for_tokens, make_schedule
from rmtsched.specs.model import ModelSpec

HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CUDA = torch.cuda.is_available()
if HAS_TRITON and not HAS_CUDA and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read once, when Triton is first imported
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"

needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="needs Triton (not a dependency; CUDA machines have it)")
WIDTHS = (1, 2, 3, 5)


def _skip_unless_interpreting() -> None:
    if not HAS_TRITON:
        pytest.skip("needs Triton (not a dependency; CUDA machines have it)")
    if HAS_CUDA:
        pytest.skip("a CUDA device is present: the CUDA tests run the compiled kernel instead")
    if not INTERPRETING:
        pytest.skip("Triton was imported before TRITON_INTERPRET=1 could be set")


def _device() -> str:
    return "cuda" if HAS_CUDA else "cpu"


def _randn(generator: torch.Generator, *shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype=dtype, device=_device())


def _check_rows_invariant(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> None:
    """Every width-w call gives each row the width-1 call's bits, and values near the fp64 product."""
    together = grouped_gemm.grouped_gemm(a, b, None if c is None else c.clone(), accumulate=c is not None)
    for i in range(len(a)):
        alone = grouped_gemm.grouped_gemm(a[i : i + 1], b[i : i + 1], None if c is None else c[i : i + 1].clone(),
                                          accumulate=c is not None)
        assert torch.equal(together[i : i + 1], alone), f"row {i} of {len(a)}"
    expected = a.double() @ b.double() + (0 if c is None else c.double())
    tolerance = 1e-4 if a.dtype == torch.float32 else 5e-2
    assert (together.double() - expected).abs().max().item() <= tolerance * max(1.0, a.shape[-1] ** 0.5)


def _row_invariance_cases(dtype: torch.dtype, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for width in WIDTHS:
        for m, k, n in ((1, 5, 3), (19, 70, 33), (64, 32, 65), (600, 40, 140)):  # the last: several tile bands
            # a transposed weight slice of a stack, as RowMatmul.linear passes it
            weight = _randn(generator, width + 1, n, k, dtype=dtype)[1:]
            _check_rows_invariant(_randn(generator, width, 1, m, k, dtype=dtype),
                                  weight.transpose(1, 2).unsqueeze(1))
        _check_rows_invariant(_randn(generator, width, 2, 17, 9, dtype=dtype), _randn(generator, width, 2, 9, 40,
                                                                                        dtype=dtype))
        phi_t = _randn(generator, width, 2, 6, 24, dtype=dtype).transpose(2, 3)  # ARMT's memory write
        _check_rows_invariant(phi_t, _randn(generator, width, 2, 6, 11, dtype=dtype),
                              _randn(generator, width, 2, 24, 11, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.slow
def test_row_bits_do_not_depend_on_the_group_count_in_the_interpreter(dtype: torch.dtype) -> None:
    _skip_unless_interpreting()
    _row_invariance_cases(dtype, seed=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # fp16 takes bf16's path: fewer compiles
@pytest.mark.cuda
@needs_triton
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_row_bits_do_not_depend_on_the_group_count_on_cuda(dtype: torch.dtype) -> None:
    _row_invariance_cases(dtype, seed=1)


@pytest.mark.cuda
@needs_triton
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("offset", [1, 3, 8])
def test_a_misaligned_row_gets_the_aligned_rows_bits_on_cuda(offset: int) -> None:
    generator = torch.Generator().manual_seed(offset)
    a = _randn(generator, 1, 1, 40, 72, dtype=torch.bfloat16)
    b = _randn(generator, 1, 1, 72, 136, dtype=torch.bfloat16)
    shifted = torch.empty(a.numel() + offset, dtype=a.dtype, device=a.device)[offset:].view_as(a).copy_(a)
    assert torch.equal(grouped_gemm.grouped_gemm(shifted, b), grouped_gemm.grouped_gemm(a, b))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["armt", "rmt"])
def test_auto_mode_through_the_grouped_gemm_keeps_every_schedule_exact(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the interpreter (CPU tensors let through) or on CUDA: the GEMMs of a tiny model run through the
    kernel at every width, and diagonal and greedy give sequential's bits."""
    if not HAS_CUDA:
        _skip_unless_interpreting()
        monkeypatch.setattr(grouped_gemm, "applies", lambda *operands: operands[0].dtype in grouped_gemm.DTYPES)
    monkeypatch.setattr(rowmm, "_plans", {})
    spec = ModelSpec(name="g", family=family, num_layers=3, d_model=16, num_heads=2, num_kv_heads=1, mlp_dim=24,
                     vocab_size=31, segment_len=4, mem_tokens=2, mem_key_dim=4, dpfp_nu=1, dtype_bytes=4)
    model = build_model(spec, seed=5, dtype=torch.float32, device=_device(), matmul="auto")
    inputs = random_inputs(spec, 1, 4 * spec.segment_len + 1, seed=6).to(_device())
    graph = graph_for_tokens(spec, inputs.shape[1])
    reference = execute(model, inputs, make_schedule(graph, "sequential")).outputs
    for name in ("diagonal", "greedy"):
        outputs = execute(model, inputs, make_schedule(graph, name)).outputs
        assert all(torch.equal(a, b) for a, b in zip(reference, outputs, strict=True)), name
    gemm_plans = {plan for key, plan in rowmm._plans.items() if key[0] != "attention"}
    assert gemm_plans == {GROUPED}


def test_auto_mode_never_takes_the_grouped_gemm_off_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rowmm, "_plans", {})
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 8, generator=generator)
    RowMatmul("auto").linear(x, torch.randn(3, 6, 8, generator=generator))
    assert GROUPED not in rowmm._plans.values()
    assert not grouped_gemm.applies(x, x)


def test_without_triton_the_kernel_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grouped_gemm, "available", lambda: False)
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(grouped_gemm.GroupedGemmUnavailable, match="needs Triton"):
        grouped_gemm.grouped_gemm(x, x)


@pytest.mark.parametrize(("a_shape", "b_shape"), [((2, 1, 4, 5), (2, 1, 6, 3)), ((4, 5), (5, 3)),
                                                   ((2, 1, 4, 5), (3, 1, 5, 3))])
def test_bad_operands_are_named(a_shape: tuple[int, ...], b_shape: tuple[int, ...],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grouped_gemm, "available", lambda: True)  # the checks run before any kernel
    with pytest.raises(ValueError, match=r"needs a \[G1, G2, m, k\]"):
        grouped_gemm.grouped_gemm(torch.zeros(a_shape), torch.zeros(b_shape))


def test_accumulate_needs_an_output_and_dtypes_must_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grouped_gemm, "available", lambda: True)
    a = torch.zeros(1, 1, 4, 5)
    with pytest.raises(ValueError, match="accumulate=True needs"):
        grouped_gemm.grouped_gemm(a, torch.zeros(1, 1, 5, 3), accumulate=True)
    with pytest.raises(ValueError, match="one dtype"):
        grouped_gemm.grouped_gemm(a, torch.zeros(1, 1, 5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="out must be"):
        grouped_gemm.grouped_gemm(a, torch.zeros(1, 1, 5, 3), torch.zeros(1, 1, 4, 4))


def test_set_grouped_gemm_forgets_cached_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rowmm, "_plans", {("x",): GROUPED})
    monkeypatch.setattr(rowmm, "_grouped_enabled", True)
    rowmm.set_grouped_gemm(False)
    assert rowmm._plans == {} and rowmm._grouped_enabled is False
