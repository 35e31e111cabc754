"""The Python API: load a model, run it under any schedule, time it, verify it, generate with it.

``rmtsched.load(...)`` gives a ``Model`` (``forward`` -> logits and hidden states, ``generate``);
``rmtsched.run(...)`` and ``rmtsched.verify(...)`` return exactly the records ``rmtsched run`` and
``rmtsched verify`` print (the CLI is a thin shell over them). Every entry point takes a ``RunConfig``
(or its fields as keywords): which model and weights, which input, device, dtype, seed.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.executor import ExecutionResult, execute
from rmtsched.backends.torch.models import build_model, parse_dtype
from rmtsched.backends.torch.params import param_shapes
from rmtsched.backends.torch.session import (
    OutputHash,
    default_tolerance,
    load_model,
    peak_memory,
    resolve_device,
    verification_schedules,
    weight_source_summary,
)
from rmtsched.backends.torch.threads import intra_op_threads
from rmtsched.backends.torch.timing import time_schedule
from rmtsched.backends.torch.token_io import InputError, TokenInput, check_token_ids, load_token_input, save_outputs
from rmtsched.errors import RunFailure, SpecError
from rmtsched.fileio import check_writable
from rmtsched.sched import Schedule, graph_for_tokens, make_schedule
from rmtsched.specs.guard import Estimate, check_fits, run_estimate
from rmtsched.specs.model import ModelSpec, load_model_spec
from rmtsched.specs.provenance import stamped
from rmtsched.specs.run import RunConfig

if TYPE_CHECKING:  # the distributed layer is imported only for a multi-process run
    from rmtsched.backends.distributed import PipelineResult


@dataclass(frozen=True)
class ForwardOutput:
    """A forward pass: ``logits`` ``[B, N, V]`` (LM head) and ``hidden`` ``[B, N, d]`` (final-normed states
    at the input positions, memory positions dropped)."""

    logits: torch.Tensor
    hidden: torch.Tensor


class Model:
    """A loaded ARMT/RMT: its spec, the backend model, where each weight came from, and its run config."""

    def __init__(self, backend: StackedModel, config: RunConfig):
        self.backend = backend
        self.config = config

    @property
    def spec(self) -> ModelSpec:
        return self.backend.spec

    @property
    def weight_sources(self) -> dict[str, str]:
        """Parameter name -> "checkpoint" | "lora-merged" | "seed" | "tied"."""
        return dict(self.backend.weight_sources)

    def token_ids(self, tokens: Any) -> torch.Tensor:
        """``tokens`` (a tensor, array or list of ids, shape [N] or [B, N]) as checked int64 ids ``[B, N]``."""
        ids = torch.as_tensor(tokens)
        if ids.dim() == 1:
            ids = ids.reshape(1, -1)
        if ids.dim() != 2 or ids.shape[1] == 0 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise InputError(f"tokens must be integer ids of shape [N] or [B, N], got {ids.dtype} {list(ids.shape)}")
        ids = ids.to(torch.int64)
        check_token_ids(ids, self.spec.vocab_size, "tokens")
        return ids

    def input_of(self, config: RunConfig) -> TokenInput:
        """The input ``config`` names (tokens or text file, else seeded random ids of ``seq_len``)."""
        return input_of(config, self.spec)

    def forward(self, tokens: Any, schedule: str = "diagonal", *, max_width: int | None = None) -> ForwardOutput:
        """Run ``tokens`` ([N] or [B, N] ids) under ``schedule``; bit-identical for every schedule on CPU."""
        ids = self.token_ids(tokens)
        plan = make_schedule(graph_for_tokens(self.spec, int(ids.shape[1])), schedule, max_width=max_width)
        result = execute(self.backend, ids, plan)
        return outputs_of(self.backend, result.outputs)

    def generate(self, tokens: Any, max_new_tokens: int, schedule: str = "diagonal",
                 eos_token_id: int | None = None) -> Any:
        """Greedy decoding after building the memory under ``schedule`` (see ``backends/torch/generate.py``).

        Returns a ``GenerationResult``: ``tokens`` [B, K], ``logits`` [B, K, V], ``prefill_s``, ``decode_s``.
        """
        from rmtsched.backends.torch.generate import generate

        return generate(self.backend, self.token_ids(tokens), max_new_tokens, schedule=schedule,
                        eos_token_id=eos_token_id)

    def __repr__(self) -> str:
        return f"Model({self.backend!r}, weights {_sources_line(weight_source_summary(self.backend))})"


def load(
    checkpoint_or_spec: str | Path | ModelSpec, *, model: str | None = None, **fields: Any
) -> Model:
    """A model from a checkpoint directory, a spec preset name or JSON file, or a ``ModelSpec`` (seeded).

    Keywords are ``RunConfig`` fields: ``model`` (a spec overriding the checkpoint's), ``segment_len``,
    ``mem_tokens``, ``armt_variant``, ``init_memory="seed"`` (ARMT memory for a plain LLaMA), ``device``,
    ``dtype``, ``seed``, ``gemm``.
    """
    if isinstance(checkpoint_or_spec, ModelSpec):
        config = RunConfig(model=checkpoint_or_spec.name, **fields)
        device, dtype = resolve_device(config.device, config.dtype_name)
        backend = load_model(checkpoint_or_spec, checkpoint=None, seed=config.seed, dtype=dtype, device=device,
                             matmul=config.gemm, spec_overrides=config.spec_overrides)
        return Model(backend, config)
    if Path(checkpoint_or_spec).is_dir():
        return load_config(RunConfig(model=model, checkpoint=Path(checkpoint_or_spec), **fields))
    if model is not None:
        raise SpecError(f"model {model!r} given twice: {checkpoint_or_spec!r} is not a checkpoint directory")
    return load_config(RunConfig(model=str(checkpoint_or_spec), **fields))


def load_config(config: RunConfig) -> Model:
    """The model ``config`` names: seeded from its spec, or read from its checkpoint."""
    device, dtype = resolve_device(config.device, config.dtype_name)
    spec = load_model_spec(config.model) if config.model is not None else None
    backend = load_model(spec, checkpoint=config.checkpoint, seed=config.seed, dtype=dtype, device=device,
                         matmul=config.gemm, spec_overrides=config.spec_overrides, init_memory=config.init_memory)
    return Model(backend, config)


def seeded_spec(config: RunConfig) -> ModelSpec:
    """The spec of ``config``'s seeded model (no checkpoint): the preset or file, with the run's overrides."""
    return load_model_spec(config.model).replace(**config.spec_overrides)


def input_of(config: RunConfig, spec: ModelSpec) -> TokenInput:
    """The input ``config`` names (tokens or text file, else seeded random ids of ``seq_len``), checked for ``spec``."""
    return load_token_input(spec, tokens=config.tokens, text=config.text, checkpoint=config.checkpoint,
                            seq_len=config.seq_len, seed=config.seed)


def outputs_of(model: StackedModel, segment_outputs: Sequence[torch.Tensor]) -> ForwardOutput:
    """Logits and hidden states from the segment outputs (one LM-head call per segment, as in any schedule)."""
    hidden = torch.cat(list(segment_outputs), dim=1)
    logits = torch.cat([model.logits(output) for output in segment_outputs], dim=1)
    return ForwardOutput(logits, hidden)


# -- rmtsched run ------------------------------------------------------------------------------------------


def run(
    config: RunConfig | None = None,
    *,
    schedule: str = "diagonal",
    max_width: int | None = None,
    devices: int = 1,
    in_process: bool = False,
    threads_per_process: int | None = None,
    timeout_s: float = 30.0,
    repeat: int = 1,
    warmup: bool = True,
    save_outputs_to: Path | str | None = None,
    progress: bool = False,
    force: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """Run ``schedule`` ``repeat`` times and return ``rmtsched run``'s record: median wall time, tokens/s,
    peak memory, ``output_sha256`` (equal hashes = bit-identical outputs), where the weights and the
    input came from. ``devices`` > 1 starts one process per device unless ``in_process``.
    ``save_outputs_to`` writes ``logits`` and ``hidden`` to a safetensors file (path checked first).
    A request estimated not to fit this machine is refused (``specs.guard``) unless ``force``.
    """
    config = _config(config, fields)
    config.require_input()
    resolve_device(config.device, config.dtype_name)  # before anything is built, in this process or the ranks
    if save_outputs_to is not None:
        save_outputs_to = check_writable(save_outputs_to, "outputs file")
        if devices > 1 and not in_process:
            raise SpecError(f"saving outputs needs the run in this process: got devices={devices} without in_process")
    in_ranks = devices > 1 and not in_process
    # Ranks build their own weights: the parent builds none for a seeded model (a checkpoint's spec needs a load).
    model = None if in_ranks and config.checkpoint is None else load_config(config)
    spec = seeded_spec(config) if model is None else model.spec
    if config.seq_len is not None:  # before random ids of that length are drawn
        check_fits(run_estimate(spec, config.seq_len, config.dtype_name, runs=repeat + warmup), force=force)
    token_input = input_of(config, spec)
    seq_len = int(token_input.ids.shape[1])
    check_fits(run_estimate(spec, seq_len, config.dtype_name, runs=repeat + warmup), force=force)
    # Built here in both modes, so a schedule that does not fit (P > layers, ...) fails before anything starts.
    plan = make_schedule(graph_for_tokens(spec, seq_len), schedule, max_width=max_width, num_devices=devices)
    sources = {"seed": sorted(param_shapes(spec))} if model is None else weight_source_summary(model.backend)
    record = {"model": spec.name, "family": spec.family, "layers": spec.num_layers, "seq_len": seq_len,
              "segment_len": spec.segment_len, "dtype": config.dtype_name,
              **_provenance(config, spec, sources, token_input)}
    if in_ranks:
        del model  # the ranks load their own copies
        record.update(_run_processes(config, spec, token_input.ids, schedule, max_width, devices,
                                     threads_per_process, timeout_s, repeat, warmup))
        return stamped(record)
    record.update(_run_here(model, token_input.ids, plan, threads_per_process, repeat, warmup, progress,
                            save_outputs_to))
    return stamped(record)


def _run_here(model: Model, ids: torch.Tensor, plan: Schedule, threads: int | None, repeat: int, warmup: bool,
              progress: bool, save_to: Path | None) -> dict[str, Any]:
    """Every step in this process: timed by ``time_schedule``, each run hashed, outputs kept only to save."""
    backend, seq_len = model.backend, int(ids.shape[1])
    digests = [OutputHash() for _ in range(repeat)]
    kept: list[torch.Tensor] = []
    bar = tqdm(total=repeat * _segments(backend, seq_len), desc="run", unit="seg",
               file=sys.stderr, delay=2.0, leave=False, disable=not progress)

    def on_output(index: int, segment: int, output: torch.Tensor) -> None:
        digests[index](segment, output)
        if index == 0 and save_to is not None:
            kept.append(output)
        bar.update(1)

    with bar, intra_op_threads(threads) as used_threads:
        timing = time_schedule(backend, ids, {plan.scheduler: plan}, repeat=repeat, warmup=warmup,
                               outputs=lambda name, index: partial(on_output, index))[plan.scheduler]
    hashes = sorted({digest.hexdigest() for digest in digests})
    if len(hashes) != 1:
        raise RunFailure(f"repeated runs gave different outputs (hashes {hashes})")
    if save_to is not None:
        outputs = outputs_of(backend, kept)
        save_outputs(save_to, outputs.logits, outputs.hidden)
    wall = timing.median_s
    peak_bytes, peak_kind = peak_memory(backend.device)
    return {
        "segments": _segments(backend, seq_len), "schedule": plan.scheduler, "steps": plan.num_steps,
        "devices": plan.num_devices, "processes": 1, "threads_per_process": used_threads,
        "device": backend.device.type, "repeat": repeat, "wall_s": wall, "wall_s_all": list(timing.runs_s),
        "tokens_per_s": seq_len * int(ids.shape[0]) / wall, "peak_memory_bytes": peak_bytes,
        "peak_memory_kind": peak_kind, "output_sha256": hashes[0], "nonfinite_outputs": digests[0].nonfinite,
        "saved_outputs": None if save_to is None else str(save_to),
    }  # fmt: skip


def _run_processes(config: RunConfig, spec: ModelSpec, ids: torch.Tensor, schedule: str, max_width: int | None,
                   devices: int, threads: int | None, timeout_s: float, repeat: int, warmup: bool) -> dict[str, Any]:
    """One local process per device through the distributed launcher; its errors name the rank and step."""
    from rmtsched.backends.distributed import run_pipelined  # optional layer: only when asked

    dtype = parse_dtype(config.dtype_name)
    if config.checkpoint is None:  # each rank draws only its own layers' weights (the full model's, same seed)
        factory = partial(build_model, spec, seed=config.seed, dtype=dtype, matmul=config.gemm)
    else:
        factory = partial(load_model, load_model_spec(config.model) if config.model else None,
                          checkpoint=config.checkpoint, seed=config.seed, dtype=dtype, matmul=config.gemm,
                          spec_overrides=config.spec_overrides, init_memory=config.init_memory)
    threads = threads or max(1, torch.get_num_threads() // devices)
    result = run_pipelined(
        factory, ids, num_procs=devices, layout=spec, schedule=schedule, max_width=max_width,
        device=config.device, threads_per_proc=threads, timeout_s=timeout_s, repeat=repeat, warmup=warmup,
    )  # fmt: skip
    record = pipeline_record(result)
    record["threads_per_process"] = threads
    return record


# -- rmtsched verify ---------------------------------------------------------------------------------------


def verify(
    config: RunConfig | None = None, *, tolerance: float | None = None, save_outputs_to: Path | str | None = None,
    progress: bool = False, force: bool = False, **fields: Any,
) -> dict[str, Any]:
    """Run every registered schedule and compare it with the sequential run; return ``rmtsched verify``'s
    record. ``ok`` is False if any schedule differs by more than ``tolerance`` (default: 0 on CPU, the
    exactness contract) or any output or final state holds NaN/inf (then nothing can be trusted).
    ``save_outputs_to`` writes the sequential run's ``logits`` and ``hidden`` (path checked first). A request
    estimated not to fit this machine is refused (``specs.guard``) unless ``force``."""
    config = _config(config, fields)
    config.require_input()
    if save_outputs_to is not None:
        save_outputs_to = check_writable(save_outputs_to, "outputs file")
    if tolerance is not None and not (tolerance >= 0 and math.isfinite(tolerance)):
        raise SpecError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    model = load_config(config)
    if config.seq_len is not None:  # before random ids of that length are drawn
        check_fits(_verify_estimate(model.spec, config.seq_len, config.dtype_name), force=force)
    token_input = model.input_of(config)
    backend, ids = model.backend, token_input.ids
    tolerance = default_tolerance(backend.device, backend.dtype) if tolerance is None else tolerance
    check_fits(_verify_estimate(model.spec, int(ids.shape[1]), config.dtype_name), force=force)
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
        **_provenance(config, model.spec, weight_source_summary(backend), token_input),
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


# -- shared ------------------------------------------------------------------------------------------------


def _config(config: RunConfig | None, fields: dict[str, Any]) -> RunConfig:
    """``config`` with ``fields`` changed, or a config of ``fields`` alone."""
    if config is None:
        return RunConfig(**fields)
    if not isinstance(config, RunConfig):
        raise SpecError(f"expected a RunConfig, got {type(config).__name__}")
    return config.replace(**fields) if fields else config


def _provenance(config: RunConfig, spec: ModelSpec, sources: dict[str, list[str]],
                token_input: TokenInput) -> dict[str, Any]:
    """Where the weights and the input came from (every record carries it)."""
    return {"checkpoint": None if config.checkpoint is None else str(config.checkpoint),
            "armt_variant": spec.armt_variant, "weight_sources": sources, "input": token_input.to_dict()}


def _segments(model: StackedModel, seq_len: int) -> int:
    return -(-seq_len // model.segment_len)


def _sources_line(summary: dict[str, list[str]]) -> str:
    return ", ".join(f"{source}: {len(names)}" for source, names in summary.items())


# -- records -------------------------------------------------------------------------------------------


def pipeline_record(result: PipelineResult) -> dict[str, Any]:
    """The run's fields (``rmtsched run``'s names), plus ``processes``, ``backend``, the bubble and ``ranks``
    (per-rank layers, busy, waiting and wall time, and peak memory; the run's peak is the max over ranks)."""
    return {
        "schedule": result.scheduler,
        "steps": result.num_steps,
        "devices": result.num_procs,
        "processes": result.num_procs,
        "backend": result.backend,
        "device": result.device,
        "segments": result.num_segments,
        "repeat": len(result.wall_s_runs),
        "wall_s": result.wall_s,
        "wall_s_all": list(result.wall_s_runs),
        "tokens_per_s": result.tokens_per_s,
        "peak_memory_bytes": max(rank.peak_memory_bytes for rank in result.ranks),
        "peak_memory_kind": "cuda_max_allocated" if result.device == "cuda" else "process_peak_rss",
        "output_sha256": result.output_sha256,
        "bubble_fraction": result.bubble_fraction,
        "ideal_bubble_fraction": result.ideal_bubble_fraction,
        "ranks": [
            {
                "rank": rank.rank,
                "layers": list(rank.layers),
                "busy_s": rank.busy_s,
                "wait_s": rank.wait_s,
                "wall_s": rank.wall_s,
                "holds_all_layers": rank.holds_all_layers,
                "peak_memory_bytes": rank.peak_memory_bytes,
            }
            for rank in result.ranks
        ],
    }


__all__ = ["ForwardOutput", "Model", "RunConfig", "load", "load_config", "outputs_of", "pipeline_record", "run",
           "verify"]
