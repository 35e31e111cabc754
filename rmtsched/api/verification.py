"""``rmtsched.verify``: every registered schedule against the sequential run; ``rmtsched verify``'s record."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from rmtsched.api.model import (
    check_fits_on,
    config_with,
    input_provenance,
    load_config,
    outputs_of,
    seeded_spec,
)
from rmtsched.backends.torch.executor import ExecutionResult, execute
from rmtsched.backends.torch.session import (
    default_tolerance,
    verification_schedules,
    weight_source_summary,
)
from rmtsched.backends.torch.token_io import save_outputs
from rmtsched.errors import SpecError
from rmtsched.fileio import check_writable
from rmtsched.sched import graph_for_tokens
from rmtsched.specs.guard import Estimate, run_estimate
from rmtsched.specs.model import ModelSpec
from rmtsched.specs.provenance import stamped
from rmtsched.specs.run import RunConfig

if TYPE_CHECKING:  # the distributed layer is imported only for a multi-process run
    pass


def verify(
    config: RunConfig | None = None, *, tolerance: float | None = None, save_outputs_to: Path | str | None = None,
    progress: bool = False, force: bool = False, **fields: Any,
) -> dict[str, Any]:
    """Run every registered schedule and compare it with the sequential run; return ``rmtsched verify``'s
    record. ``ok`` is False if any schedule differs by more than ``tolerance`` (default: 0 on CPU, the
    exactness contract) or any output or final state holds NaN/inf (then nothing can be trusted).
    ``save_outputs_to`` writes the sequential run's ``logits`` and ``hidden`` (path checked first). A request
    estimated not to fit this machine is refused (``specs.guard``) unless ``force``."""
    config = config_with(config, fields)
    config.require_input()
    if save_outputs_to is not None:
        save_outputs_to = check_writable(save_outputs_to, "outputs file")
    if tolerance is not None and not (tolerance >= 0 and math.isfinite(tolerance)):
        raise SpecError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    if config.checkpoint is None and config.seq_len is not None:  # a seeded model: checked before it is built
        check_fits_on(_verify_estimate(seeded_spec(config), config.seq_len, config.dtype_name), config, force)
    model = load_config(config)
    if config.seq_len is not None:  # before random ids of that length are drawn
        check_fits_on(_verify_estimate(model.spec, config.seq_len, config.dtype_name), config, force)
    token_input = model.input_of(config)
    backend, ids = model.backend, token_input.ids
    tolerance = default_tolerance(backend.device, backend.dtype) if tolerance is None else tolerance
    check_fits_on(_verify_estimate(model.spec, int(ids.shape[1]), config.dtype_name), config, force)
    graph = graph_for_tokens(model.spec, int(ids.shape[1]))
    schedules = verification_schedules(graph)
    sequential = execute(backend, ids, schedules.pop("sequential"))
    if save_outputs_to is not None:
        outputs = outputs_of(backend, sequential.outputs)
        save_outputs(save_outputs_to, outputs.logits, outputs.hidden)
    reference = _comparable(sequential)
    reference_nonfinite = _nonfinite(reference)
    rows = []
    for name, schedule in tqdm(schedules.items(), desc="verify", unit="schedule", file=sys.stderr, delay=2.0,
                               leave=False, disable=not progress):
        result = execute(backend, ids, schedule)
        compared = _comparable(result)
        nonfinite = _nonfinite(compared)
        diff = _max_abs_diff(reference, compared) if nonfinite == reference_nonfinite == 0 else None
        rows.append({"schedule": name, "steps": schedule.num_steps, "max_width": schedule.max_width,
                     "max_abs_diff": diff, "bitwise_equal": _bitwise_equal(reference, compared),
                     "nonfinite": nonfinite, "within_tolerance": diff is not None and diff <= tolerance,
                     "wall_s": result.stats.wall_s})
    return stamped({
        "model": model.spec.name, "seq_len": int(ids.shape[1]), "device": backend.device.type,
        "dtype": config.dtype_name, "tolerance": tolerance, "reference_nonfinite": reference_nonfinite,
        "ok": reference_nonfinite == 0 and all(row["within_tolerance"] for row in rows),
        **input_provenance(config, model.spec, weight_source_summary(backend), token_input),
        "saved_outputs": None if save_outputs_to is None else str(save_outputs_to), "schedules": rows,
    })  # fmt: skip


def _verify_estimate(spec: ModelSpec, seq_len: int, dtype_name: str) -> Estimate:
    """verify runs about six schedules and keeps two full sets of outputs (the reference and one other)."""
    return run_estimate(spec, seq_len, dtype_name, runs=6, kept_outputs=2, verb="verifying")


def _comparable(result: ExecutionResult) -> list[torch.Tensor]:
    """What must match across schedules: every segment output, every final memory state, the last raw hidden."""
    state = [result.final_state[name] for name in sorted(result.final_state)]
    return [*result.outputs, *state, result.last_hidden]


def _nonfinite(tensors: list[torch.Tensor]) -> int:
    return sum(int(t.numel() - torch.isfinite(t).sum()) for t in tensors if t.is_floating_point())


def _max_abs_diff(reference: list[torch.Tensor], other: list[torch.Tensor]) -> float:
    """max |a - b| in fp64 over all tensors (both sides finite: checked by the caller)."""
    return max((float((a.double() - b.double()).abs().max()) for a, b in zip(reference, other, strict=True)
                if a.numel()), default=0.0)


def _bitwise_equal(reference: list[torch.Tensor], other: list[torch.Tensor]) -> bool:
    return all(torch.equal(a, b) for a, b in zip(reference, other, strict=True))
