"""``rmtsched.run``: time a schedule of a model (or the full-attention baseline) and return the record
``rmtsched run`` prints; every record carries the run's FLOPs by the cost model and the FLOP/s achieved."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rmtsched.api.baseline import check_full_attention_options, run_full_attention
from rmtsched.api.measuring import OutputCallback, measure
from rmtsched.api.model import (
    Model,
    check_fits_on,
    config_with,
    input_of,
    input_provenance,
    load_config,
    seeded_spec,
    segment_count,
)
from rmtsched.backends.torch.models import build_model, parse_dtype
from rmtsched.backends.torch.params import param_shapes
from rmtsched.backends.torch.session import load_model, resolve_device, weight_source_summary
from rmtsched.backends.torch.threads import intra_op_threads
from rmtsched.backends.torch.timing import Timing, time_schedule
from rmtsched.calibrate.steps import record_steps
from rmtsched.errors import SpecError
from rmtsched.fileio import check_writable
from rmtsched.sched import Schedule, graph_for_tokens, make_schedule
from rmtsched.sim.study import FULL_ATTENTION, run_flops
from rmtsched.specs.guard import Estimate, full_attention_estimate, run_estimate
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
    trace: Path | str | None = None,
    chunk_tokens: int | None = None,
    cuda_graphs: bool = False,
    progress: bool = False,
    force: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """Run ``schedule`` ``repeat`` times and return ``rmtsched run``'s record: median wall time, tokens/s,
    achieved FLOP/s (the cost model's FLOPs over the median wall time), peak memory, ``output_sha256``
    (equal hashes = bit-identical outputs), where the weights and the input came from. ``devices`` > 1
    starts one process per device unless ``in_process``. ``save_outputs_to`` writes ``logits`` and
    ``hidden`` to a safetensors file (path checked first). ``trace`` writes a Chrome/Perfetto trace of one
    more, untimed run, its steps named as in the simulator's trace (path checked first).

    ``schedule="full-attention"`` runs the baseline instead: the same LLaMA weights without memory on all N
    tokens, ``chunk_tokens`` at a time (``api/baseline.py``). ``cuda_graphs`` (CUDA only) replays each step
    shape from a captured CUDA graph (docs/cuda.md). A request estimated not to fit this machine is refused
    (``specs.guard``) unless ``force``.
    """
    config = config_with(config, fields)
    config.require_input()
    check_full_attention_options(schedule, devices=devices, in_process=in_process, max_width=max_width,
                                 chunk_tokens=chunk_tokens, trace=trace)
    resolve_device(config.device, config.dtype_name)  # before anything is built, in this process or the ranks
    in_ranks = devices > 1 and not in_process
    if cuda_graphs and (config.device != "cuda" or in_ranks or schedule == FULL_ATTENTION):
        raise SpecError(f"cuda_graphs needs a schedule run in this process on --device cuda: got device "
                        f"{config.device!r}, schedule {schedule!r}, devices={devices}, in_process={in_process}")
    if save_outputs_to is not None:
        save_outputs_to = check_writable(save_outputs_to, "outputs file")
        if in_ranks:
            raise SpecError(f"saving outputs needs the run in this process: got devices={devices} without in_process")
    if trace is not None:
        trace = check_writable(trace, "trace file")
        if in_ranks:
            raise SpecError(f"a trace records the run in this process: got devices={devices} without in_process")
    # A checkpoint's spec comes with its weights; a seeded model is checked against the guard before it is built.
    model = None if config.checkpoint is None else load_config(config)
    spec = seeded_spec(config) if model is None else model.spec
    if config.seq_len is not None:  # before random ids of that length are drawn
        check_fits_on(_estimate(spec, config.seq_len, config.dtype_name, schedule, chunk_tokens, repeat + warmup),
                      config, force)
    if model is None and not in_ranks:  # ranks build their own weights: the parent builds none
        model = load_config(config)
        spec = model.spec
    token_input = input_of(config, spec)
    seq_len = int(token_input.ids.shape[1])
    check_fits_on(_estimate(spec, seq_len, config.dtype_name, schedule, chunk_tokens, repeat + warmup), config, force)
    sources = {"seed": sorted(param_shapes(spec))} if model is None else weight_source_summary(model.backend)
    record = {"model": spec.name, "family": spec.family, "layers": spec.num_layers, "seq_len": seq_len,
              "segment_len": spec.segment_len, "dtype": config.dtype_name,
              **input_provenance(config, spec, sources, token_input)}
    if schedule == FULL_ATTENTION:
        record.update(run_full_attention(model.backend, token_input.ids, chunk_tokens=chunk_tokens,
                                         threads=threads_per_process, repeat=repeat, warmup=warmup,
                                         progress=progress, save_to=save_outputs_to))
        return _with_flops(record, spec, token_input.ids)
    # Built here in both modes, so a schedule that does not fit (P > layers, ...) fails before anything starts.
    plan = make_schedule(graph_for_tokens(spec, seq_len), schedule, max_width=max_width, num_devices=devices)
    if in_ranks:
        del model  # the ranks load their own copies
        record.update(_run_processes(config, spec, token_input.ids, schedule, max_width, devices,
                                     threads_per_process, timeout_s, repeat, warmup))
    else:
        record.update(_run_here(model, token_input.ids, plan, threads_per_process, repeat, warmup, progress,
                                save_outputs_to, trace, cuda_graphs))
    return _with_flops(record, spec, token_input.ids)


def _estimate(spec: ModelSpec, seq_len: int, dtype: str, schedule: str, chunk_tokens: int | None,
              runs: int) -> Estimate:
    if schedule == FULL_ATTENTION:
        return full_attention_estimate(spec, seq_len, dtype, chunk_tokens, runs=runs)
    return run_estimate(spec, seq_len, dtype, runs=runs)


def _with_flops(record: dict[str, Any], spec: ModelSpec, ids: torch.Tensor) -> dict[str, Any]:
    """The record, stamped, with the cost model's FLOPs of the run (``sim.study.run_flops``) and the rate the
    median run achieved (``flops / wall_s``): how near the machine's GEMM rate the executor gets."""
    batch, seq_len = ids.shape
    flops = run_flops(spec, int(seq_len), full_attention=record["schedule"] == FULL_ATTENTION,
                      batch_size=int(batch))
    record.update(flops=flops, achieved_flops_per_s=flops / record["wall_s"])
    return stamped(record)


def _run_here(model: Model, ids: torch.Tensor, plan: Schedule, threads: int | None, repeat: int, warmup: bool,
              progress: bool, save_to: Path | None, trace: Path | None, cuda_graphs: bool) -> dict[str, Any]:
    """Every step in this process: timed by ``time_schedule``, each run hashed, outputs kept only to save;
    then, if asked, one more run traced step by step."""
    backend = model.backend

    def timed(outputs: Callable[[int], OutputCallback]) -> Timing:
        runs = time_schedule(backend, ids, {plan.scheduler: plan}, repeat=repeat, warmup=warmup,
                             outputs=lambda name, index: outputs(index), cuda_graphs=cuda_graphs)
        return runs[plan.scheduler]

    segments = segment_count(backend, int(ids.shape[1]))
    measured = measure(backend, ids, timed, outputs_per_run=segments, threads=threads, repeat=repeat,
                       progress=progress, save_to=save_to)
    if trace is not None:
        with intra_op_threads(threads):
            recorder = record_steps(backend, ids, plan)
        recorder.write(plan, trace, name=f"rmtsched run: {model.spec.name} {plan.scheduler}, {ids.shape[1]:,} tokens")
    return {"segments": segments, "schedule": plan.scheduler, "steps": plan.num_steps, "devices": plan.num_devices,
            **measured, "trace": None if trace is None else str(trace), "cuda_graphs": cuda_graphs}


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
        "trace": None,
        "cuda_graphs": False,
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
