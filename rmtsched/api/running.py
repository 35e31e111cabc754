"""``rmtsched.run``: time a schedule of a model and return the record ``rmtsched run`` prints."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from rmtsched.api.model import (
    Model,
    config_with,
    input_of,
    input_provenance,
    load_config,
    outputs_of,
    seeded_spec,
    segment_count,
)
from rmtsched.backends.torch.models import build_model, parse_dtype
from rmtsched.backends.torch.params import param_shapes
from rmtsched.backends.torch.session import (
    OutputHash,
    load_model,
    peak_memory,
    resolve_device,
    weight_source_summary,
)
from rmtsched.backends.torch.threads import intra_op_threads
from rmtsched.backends.torch.timing import time_schedule
from rmtsched.backends.torch.token_io import save_outputs
from rmtsched.errors import RunFailure, SpecError
from rmtsched.fileio import check_writable
from rmtsched.sched import Schedule, graph_for_tokens, make_schedule
from rmtsched.specs.guard import check_fits, run_estimate
from rmtsched.specs.model import ModelSpec, load_model_spec
from rmtsched.specs.provenance import stamped
from rmtsched.specs.run import RunConfig

if TYPE_CHECKING:  # the distributed layer is imported only for a multi-process run
    from rmtsched.backends.distributed import PipelineResult


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
    config = config_with(config, fields)
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
              **input_provenance(config, spec, sources, token_input)}
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
    bar = tqdm(total=repeat * segment_count(backend, seq_len), desc="run", unit="seg",
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
        "segments": segment_count(backend, seq_len), "schedule": plan.scheduler, "steps": plan.num_steps,
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
        "nonfinite_outputs": result.nonfinite_outputs,
        "saved_outputs": None,
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
