"""The work of one cell, kernel by kernel: the contract between a model and the cost simulator.

A model (built-in ARMT/RMT or a plug-in) describes a cell on ``tokens`` tokens as a list of
``KernelWork``; the simulator turns that into time with a roofline per kernel, one launch per kernel
per step, and weights read once per layer of a step. Nothing here knows about hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

from rmtsched.errors import SpecError


@dataclass(frozen=True)
class KernelWork:
    """One kernel of one cell: floating-point work and bytes moved.

    ``weight_bytes`` are the layer's parameters the kernel reads (read once per layer per step, however
    many tokens); ``activation_bytes`` are inputs/outputs/state the kernel reads and writes for this cell.
    ``matmul`` marks tensor-core work (peak matmul FLOP/s applies) versus elementwise/reduction work.
    ``per_row`` marks a kernel a width-w step launches once per cell (a per-row loop kept for batch
    invariance: SDPA per row, ``RowMatmul``'s row fallback), so batching amortises neither its launch
    nor its efficiency ramp.
    ``tiles`` counts the kernel's independent blocks of work per cell (a GEMM's 128 x 128 output tiles, a
    flash attention's 128-query blocks per head), which a GPU spreads over its SMs in waves; 0 = unknown
    (no wave quantisation). A batched step runs the tiles of all its cells in one launch.
    ``useful_fraction`` is the share of the work a tiled (GPU) kernel executes that ``flops`` counts: a
    flash attention computes whole 128 x 128 blocks, and the causal mask keeps about half of each
    diagonal block, so on short sequences a good part of its work is masked away.
    """

    name: str
    flops: float
    weight_bytes: float = 0.0
    activation_bytes: float = 0.0
    matmul: bool = True
    per_row: bool = False
    tiles: int = 0
    useful_fraction: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.useful_fraction <= 1:
            raise SpecError(f"kernel {self.name!r}: useful_fraction must be in (0, 1], got {self.useful_fraction!r}")
