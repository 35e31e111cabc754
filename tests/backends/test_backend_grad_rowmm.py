"""The differentiable row kernels: autograd's numerical gradient check, and row-exact backward bits.

``gradcheck`` compares each hand-written backward with finite differences of the forward (fp64), which
is independent of our formulas; the width test runs each kernel on w rows and on each row alone and
asks for identical forward and backward bits, which is what makes a batched training step exact.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from rmtsched.backends.torch.grad_rowmm import GradRowMatmul, scale_rows, shift_rows
from rmtsched.backends.torch.rowmm import RowMatmul
from rmtsched.backends.torch.threads import intra_op_threads

MATMUL = GradRowMatmul(RowMatmul("auto"))


def _operands(width: int, dtype: torch.dtype, seed: int = 0) -> dict[str, list[torch.Tensor]]:
    """Operand shapes as one ARMT cell uses them (``w`` rows, batch 2, heads 2 with 1 KV head)."""
    g = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(width, *shape, generator=g, dtype=dtype)

    return {
        "linear": [draw(6, 8), draw(5, 8)],
        "batched": [draw(2, 6, 4), draw(2, 4, 3)],
        "accumulate": [draw(2, 4, 3), draw(2, 4, 6), draw(2, 6, 3)],
        "attention": [draw(1, 2, 3, 2), draw(1, 1, 3, 2), draw(1, 1, 3, 2)],
        "scale_rows": [draw(2, 5, 8), draw(1, 1, 8)],
        "shift_rows": [draw(2, 5, 1), draw(1, 1, 1)],
    }


KERNELS: dict[str, Callable[..., torch.Tensor]] = {
    "linear": MATMUL.linear,
    "batched": MATMUL.batched,
    "accumulate": MATMUL.accumulate,
    "attention": MATMUL.attention,
    "scale_rows": scale_rows,
    "shift_rows": shift_rows,
}


@pytest.mark.parametrize("name", list(KERNELS))
def test_backward_matches_finite_differences(name: str) -> None:
    operands = [t.requires_grad_() for t in _operands(2, torch.float64)[name]]
    assert torch.autograd.gradcheck(KERNELS[name], operands, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_row_of_a_wide_call_has_the_bits_of_its_width_one_call(name: str, dtype: torch.dtype) -> None:
    width = 3
    operands = _operands(width, dtype, seed=1)[name]
    upstream = torch.randn_like(KERNELS[name](*operands))

    def forward_backward(parts: list[torch.Tensor], grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        leaves = [part.detach().clone().requires_grad_() for part in parts]
        out = KERNELS[name](*leaves)
        out.backward(grad)
        return (out.detach(), *(leaf.grad for leaf in leaves))

    with intra_op_threads(1):
        wide = forward_backward(operands, upstream)
        for row in range(width):
            alone = forward_backward([t[row : row + 1] for t in operands], upstream[row : row + 1])
            for got, expected in zip(wide, alone, strict=True):
                assert torch.equal(got[row : row + 1], expected), f"{name}: row {row} differs"


def test_attention_refuses_a_kv_cache() -> None:
    q, k, v = torch.randn(1, 1, 1, 2, 4), torch.randn(1, 1, 1, 3, 4), torch.randn(1, 1, 1, 3, 4)
    with pytest.raises(ValueError, match="equal lengths"):
        MATMUL.attention(q, k, v)
