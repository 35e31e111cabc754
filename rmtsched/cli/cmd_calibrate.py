"""``rmtsched calibrate``: microbenchmark the PyTorch backend and fit a hardware spec for the simulator.

torch and the calibration code are imported inside the handler, so ``rmtsched --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rmtsched.cli.args import positive_int
from rmtsched.cli.output import show_progress, to_json
from rmtsched.fileio import atomic_write_text, check_writable

if TYPE_CHECKING:
    from rmtsched.calibrate.calibration import Calibration


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="microbenchmark the backend's kernels and fit a hardware spec (JSON for --hardware)"
    )
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda (cuda measures LLaMA-sized shapes: d_model up to 2048)")
    parser.add_argument("--dtype", default=None, help="fp32 or bf16 (default: fp32 on cpu, bf16 on cuda)")
    parser.add_argument("--out", type=Path, default=None, help="write the spec here (default: print it)")
    parser.add_argument("--quick", action="store_true", help="a coarse calibration in a few seconds (tests)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--name", default=None, help="the spec's name (default: calibrated-DEVICE-DTYPE)")
    parser.add_argument("--report", type=Path, default=None, help="also write every measurement and fit stage (JSON)")
    parser.add_argument("--clock", default="wall",
                        help="wall (default) or process: CPU time, for --threads 1 on a machine others share")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rmtsched.calibrate.calibration import calibrate
    from rmtsched.calibrate.device import resolve_target

    for option, path in (("--out", args.out), ("--report", args.report)):
        if path is not None:  # refused before the minutes of measuring, not after
            check_writable(path, option)
    target = resolve_target(args.device, args.dtype, args.threads)
    result = calibrate(target, quick=args.quick, name=args.name, progress=show_progress(args), clock_name=args.clock)
    if args.report is not None:
        atomic_write_text(args.report, to_json(result.report(), indent=2) + "\n")
    if args.out is None:
        print(result.hardware.to_json())
        print(summary(result), file=sys.stderr)
    else:
        result.hardware.save(args.out)
        print(summary(result))
        print(f"wrote {args.out} (use it as --hardware {args.out})")
    return 0


def summary(result: Calibration) -> str:
    """The fitted fields and how well each stage's measurements are explained."""
    hw = result.hardware
    dtype, rate = next(iter(hw.matmul_flops_per_s.items()))
    lines = [
        f"{hw.name}: {len(result.measurements)} measurements on {result.host} in {result.elapsed_s:.1f} s",
        f"  matmul {dtype} {rate / 1e9:.1f} GFLOP/s (half-rate at {hw.matmul_half_flops / 1e6:.2f} MFLOP), "
        f"vector {hw.vector_flops_per_s / 1e9:.2f} GFLOP/s, memory {hw.memory_bandwidth_bytes_per_s / 1e9:.1f} GB/s, "
        f"launch {hw.launch_overhead_s * 1e6:.2f} us per kernel",
    ]
    for stage in result.stages:
        lines.append(
            f"  stage {stage.name:<10} {stage.measurements:>4} measurements: median |error| "
            f"{100 * stage.median_abs_rel_error:5.1f}%, max {100 * stage.max_abs_rel_error:6.1f}%"
        )
    return "\n".join(lines)
