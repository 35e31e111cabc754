"""Reports of a study: one JSON-ready record per schedule, and the readable table ``simulate`` prints."""

from __future__ import annotations

from typing import Any

from rmtsched.sim.study import Study, StudyRun


def run_record(study: Study, run: StudyRun) -> dict[str, Any]:
    """The JSON object of one schedule, with speedups against sequential (None when it was not run) and
    against full attention, and the model's recurrent state beside full attention's KV cache."""
    spec, result, baseline = study.spec, run.result, study.full_attention.result
    sequential = study.run("sequential")
    return {
        "schedule": run.schedule,
        "model": spec.name,
        "family": spec.family,
        "hardware": study.hardware.name,
        "runtime": study.hardware.runtime,
        "seq_len": study.seq_len,
        "segment_len": spec.segment_len,
        "mem_tokens": spec.mem_tokens,
        "batch_size": study.batch_size,
        "layers": study.graph.num_layers,
        "segments": study.graph.num_segments,
        "max_width": study.max_width,
        **result.to_dict(),
        "memory_capacity_bytes": study.hardware.memory_bytes,
        "fits_in_memory": run.fits_in_memory,
        "memory_state_bytes": study.memory_state_bytes,
        "full_attention_makespan_s": baseline.makespan_s,
        "full_attention_peak_memory_bytes": baseline.max_peak_memory_bytes,
        "full_attention_kv_cache_bytes": study.kv_cache_bytes,
        "full_attention_fits_in_memory": study.full_attention.fits_in_memory,
        "speedup_vs_sequential": sequential.result.makespan_s / result.makespan_s if sequential else None,
        "speedup_vs_full_attention": baseline.makespan_s / result.makespan_s,
    }


def format_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3f} {unit}"
    return f"{seconds * 1e9:.1f} ns"


def format_bytes(num_bytes: float) -> str:
    return f"{num_bytes / 1e9:.2f} GB" if num_bytes >= 1e8 else f"{num_bytes / 1e6:.2f} MB"


def format_table(study: Study, compare: bool) -> str:
    """A header naming what was simulated, then one row per schedule and one for full attention."""
    spec, graph = study.spec, study.graph
    header = (
        f"{spec.name} on {study.hardware.name}: {study.seq_len:,} tokens = {graph.num_segments:,} segments of "
        f"{spec.segment_len} (+{spec.mem_tokens} memory tokens) x {graph.num_layers} layers = "
        f"{graph.num_cells:,} cells{f', batch {study.batch_size}' if study.batch_size > 1 else ''}; engine "
        f"{study.engine}; runtime {study.hardware.runtime or '-'}; "
        f"memory {format_bytes(study.hardware.memory_bytes)}/device"
    )
    state = (
        f"recurrent state {format_bytes(study.memory_state_bytes)} vs full attention's KV cache "
        f"{format_bytes(study.kv_cache_bytes)}"
    )
    columns = ["schedule", "devices", "steps", "makespan", "util", "bubble", "peak mem", "fits"]
    if compare:
        columns += ["vs sequential", "vs full-attn"]
    rows = []
    for run in (*study.runs, study.full_attention):
        record = run_record(study, run)
        row = [
            run.schedule,
            str(record["devices"]),
            f"{record['steps']:,}",
            format_time(record["makespan_s"]),
            f"{100 * record['utilization']:.1f}%",
            f"{100 * record['bubble_fraction']:.1f}%",
            format_bytes(record["peak_memory_bytes"]),
            "yes" if run.fits_in_memory else "NO",
        ]
        if compare:
            vs_sequential = record["speedup_vs_sequential"]
            row += [f"{vs_sequential:.2f}x" if vs_sequential else "-", f"{record['speedup_vs_full_attention']:.2f}x"]
        rows.append(row)
    widths = [max(len(col), *(len(row[i]) for row in rows)) for i, col in enumerate(columns)]
    lines = [header, state, "  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


__all__ = ["format_bytes", "format_table", "format_time", "run_record"]
