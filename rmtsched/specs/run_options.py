"""Command-line options shared by every parser: types that reject bad values with one clear message, and
the one option group of a run configuration (``add_run_arguments`` -> ``run_config`` -> ``RunConfig``).

It sits beside ``RunConfig`` in ``specs`` (torch-free, below ``backends``) because the torchrun worker's
parser (``cli/torchrun_worker.py``) uses the same group as ``rmtsched run``; the subcommands
reach it through ``rmtsched.cli.args``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rmtsched.specs.model import ARMT_VARIANTS, available_model_specs
from rmtsched.specs.run import DEVICE_DTYPES, GEMM_MODES, INIT_MEMORY, RunConfig


def _number_type(cast: Callable[[str], Any], accept: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse ``type`` that casts the text and rejects values outside ``accept`` as "expected ..., got ..."."""

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


# Layers, segments, devices, widths, lengths; memory tokens and seeds; timeouts; tolerances.
positive_int = _number_type(int, lambda value: value > 0, "a positive integer")
non_negative_int = _number_type(int, lambda value: value >= 0, "a non-negative integer")
positive_seconds = _number_type(float, lambda value: 0 < value < math.inf, "a positive, finite number of seconds")
non_negative_float = _number_type(float, lambda value: 0 <= value < math.inf, "a finite number >= 0")


def add_run_arguments(
    parser: argparse.ArgumentParser, *, checkpoint: bool = True, inputs: bool = True,
    dtype_default: str | None = "fp32", execution: bool = True,
) -> None:
    """The one argparse group of ``RunConfig`` (``rmtsched.specs.run``); ``run_config(args)`` reads it back.

    Used by ``run``, ``verify``, ``compare``, ``generate``, ``simulate`` and the torchrun worker. ``checkpoint=False``
    leaves out ``--checkpoint``/``--init-memory`` (commands that build seeded models only);
    ``inputs=False`` leaves out ``--tokens``/``--text`` and makes ``--seq-len`` required.
    ``dtype_default`` None lets the command choose the dtype per device (compare: bf16 on CUDA).
    ``execution=False`` leaves out what only a real run needs (``--device``, ``--dtype``, ``--seed``,
    ``--gemm``): ``simulate`` costs the spec alone.

    A command that runs a model (``generate`` too) registers the group and, in its handler, imports
    the API and reads the config back::

        add_run_arguments(parser)                          # in register()
        config = run_config(args)                          # in the handler: a checked RunConfig
        model = rmtsched.api.load_config(config)           # seeded, or from --checkpoint (weight_sources)
        ids = model.input_of(config).ids                   # --tokens / --text / --seq-len random ids
    """
    group = parser.add_argument_group("model and input (a RunConfig)")
    required = "" if checkpoint else " (required)"
    group.add_argument("--model", required=not checkpoint, default=None,
                       help=f"a JSON model spec file or one of {available_model_specs()}{required}; with "
                            "--checkpoint it overrides the checkpoint's spec")
    if checkpoint:
        group.add_argument("--checkpoint", type=Path, default=None,
                           help="checkpoint directory (rmtsched's own, a Hugging Face LLaMA, or the ARMT reference "
                                "layout); its spec is used unless --model is given")
        group.add_argument("--init-memory", choices=INIT_MEMORY, default=None,
                           help="'seed': draw the ARMT memory weights a plain LLaMA checkpoint lacks from --seed")
    group.add_argument("--seq-len", type=positive_int, required=not inputs, default=None,
                       help="tokens in the input sequence N" + (
                           " (default: the whole --tokens/--text input; smaller truncates it; required without one)"
                           if inputs else ""))
    if inputs:
        group.add_argument("--tokens", type=Path, default=None,
                           help="token ids: a text file of whitespace-separated integers, or a .npy of shape [N] or "
                                "[B, N] (default: seeded random ids)")
        group.add_argument("--text", type=Path, default=None,
                           help="a UTF-8 text file, encoded with the checkpoint's tokenizer.json")
    group.add_argument("--segment-len", type=positive_int, default=None, help="tokens per segment T (spec override)")
    group.add_argument("--mem-tokens", type=non_negative_int, default=None, help="memory tokens M (spec override)")
    group.add_argument("--armt-variant", choices=ARMT_VARIANTS, default=None,
                       help="ARMT memory maths (spec override): paper (published checkpoints) or normalized")
    if not execution:
        return
    group.add_argument("--device", default="cpu", help=f"one of {sorted(DEVICE_DTYPES)}")
    dtypes = "; ".join(f"{', '.join(names)} on {device}" for device, names in DEVICE_DTYPES.items())
    group.add_argument("--dtype", default=dtype_default,
                       help=f"{dtypes} (default: {dtype_default or 'fp32 on cpu, bf16 on cuda'})")
    group.add_argument("--seed", type=non_negative_int, default=0,
                       help="seed of the weights drawn (all, or those a checkpoint lacks) and of random input ids")
    group.add_argument("--gemm", choices=GEMM_MODES, default="auto", help="row-GEMM mode (see rowmm.py)")


def run_config(args: argparse.Namespace) -> RunConfig:
    """The ``RunConfig`` of parsed ``add_run_arguments`` options (absent ones take the config's defaults)."""
    names = [field.name for field in dataclasses.fields(RunConfig)]
    return RunConfig(**{name: getattr(args, name) for name in names if hasattr(args, name)})
