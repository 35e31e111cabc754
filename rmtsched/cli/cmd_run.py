"""``rmtsched run``: execute a schedule of a real (seeded or checkpointed) model and time it.

Prints the median wall time of R runs, tokens/s, peak memory and ``output_sha256``, the sha256 of the
final hidden states' bytes hashed in segment order (equal hashes = bit-identical outputs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from tqdm import tqdm

from rmtsched.backends.torch import execute
from rmtsched.backends.torch.rowmm import MODES
from rmtsched.backends.torch.session import (
    OutputHash,
    load_model,
    peak_memory,
    random_token_ids,
    resolve_device,
    warm_up,
)
from rmtsched.cli.args import non_negative_int, positive_int
from rmtsched.errors import RmtschedError
from rmtsched.sched import available_schedulers, build_cell_graph, make_schedule, split_segments
from rmtsched.specs.model import ModelSpec, available_model_specs, load_model_spec


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model/input options ``run`` and ``verify`` share."""
    parser.add_argument("--model", required=True, help=f"a JSON model spec file or one of {available_model_specs()}")
    parser.add_argument("--checkpoint", type=Path, default=None, help="load weights from this checkpoint directory")
    parser.add_argument("--seq-len", type=positive_int, required=True, help="tokens in the input sequence N")
    parser.add_argument("--segment-len", type=positive_int, default=None, help="tokens per segment T")
    parser.add_argument("--mem-tokens", type=non_negative_int, default=None, help="memory tokens M")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="fp32", help="fp32 or fp64 on cpu; fp32, bf16 or fp16 on cuda")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the weights and the input tokens")
    parser.add_argument("--gemm", choices=MODES, default="auto", help="row-GEMM mode (see rowmm.py)")


def model_spec(args: argparse.Namespace) -> ModelSpec:
    spec = load_model_spec(args.model)
    changes = {"segment_len": args.segment_len, "mem_tokens": args.mem_tokens}
    return spec.replace(**{name: value for name, value in changes.items() if value is not None})


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="execute a schedule of a real model; time it and hash its output")
    add_model_arguments(parser)
    parser.add_argument("--schedule", required=True, help=f"one of {available_schedulers()}")
    parser.add_argument("--devices", type=positive_int, default=1, help="pipeline stages P (run in one process)")
    parser.add_argument("--max-width", type=positive_int, default=None, help="cap on cells per step")
    parser.add_argument("--repeat", type=positive_int, default=1, help="runs R; the median wall time is reported")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the untimed warm-up on a short prefix (one-time GEMM probes, allocator)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    spec = model_spec(args)
    device, dtype = resolve_device(args.device, args.dtype)
    segments = split_segments(args.seq_len, spec.segment_len)
    graph = build_cell_graph(spec.num_layers, segment_tokens=segments, rule=spec.dependency_rule)
    schedule = make_schedule(graph, args.schedule, max_width=args.max_width, num_devices=args.devices)
    model = load_model(spec, checkpoint=args.checkpoint, seed=args.seed, dtype=dtype, device=device, matmul=args.gemm)
    inputs = random_token_ids(spec, args.seq_len, args.seed)
    if args.warmup:
        warm_up(model, schedule, args.seq_len)
    walls, hashes = [], []
    for repeat in range(args.repeat):
        digest = OutputHash()
        with tqdm(total=len(segments), desc=f"run {repeat + 1}/{args.repeat}", unit="seg", file=sys.stderr,
                  delay=2.0, leave=False) as bar:

            def on_output(segment, output, digest=digest, bar=bar):
                digest(segment, output)
                bar.update(1)

            result = execute(model, inputs, schedule, on_segment_output=on_output, collect_outputs=False)
        walls.append(result.stats.wall_s)
        hashes.append(digest.hexdigest())
    if len(set(hashes)) != 1:
        raise RmtschedError(f"repeated runs gave different outputs (hashes {sorted(set(hashes))})")
    wall = statistics.median(walls)
    peak_bytes, peak_kind = peak_memory(device)
    record = {
        "model": spec.name, "family": spec.family, "layers": spec.num_layers, "seq_len": args.seq_len,
        "segment_len": spec.segment_len, "segments": len(segments), "schedule": schedule.scheduler,
        "steps": schedule.num_steps, "devices": schedule.num_devices, "device": device.type, "dtype": args.dtype,
        "repeat": args.repeat, "wall_s": wall, "wall_s_all": walls, "tokens_per_s": args.seq_len / wall,
        "peak_memory_bytes": peak_bytes, "peak_memory_kind": peak_kind, "output_sha256": hashes[0],
    }
    if args.json:
        print(json.dumps(record))
    else:
        print(
            f"{spec.name} ({spec.family}, {spec.num_layers} layers) on {device.type}/{args.dtype}: "
            f"{args.seq_len} tokens in {len(segments)} segments, {schedule.scheduler} schedule of "
            f"{schedule.num_steps} steps\n"
            f"wall {wall:.4f} s (median of {args.repeat}), {record['tokens_per_s']:.1f} tokens/s, "
            f"peak memory {peak_bytes / 2**20:.1f} MiB ({peak_kind})\n"
            f"output_sha256 {hashes[0]}"
        )
    return 0
