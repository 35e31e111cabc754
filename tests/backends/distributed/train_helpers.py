"""What the multi-process training tests share: a tiny model, a batch, and schedules on several devices."""

from __future__ import annotations

import torch

from rmtsched.backends.torch import build_model
from rmtsched.backends.torch.base import StackedModel
from rmtsched.backends.torch.executor import model_graph
from rmtsched.sched import TrainGraph, TrainSchedule, TrainStep, TrainTransfer, make_train_schedule
from rmtsched.specs.model import ModelSpec

NUM_TOKENS = 23  # 5 segments of 5 tokens, the last one short


def tiny_model(family: str, variant: str = "paper", dtype: torch.dtype = torch.float32, **changes) -> StackedModel:
    fields = dict(name="dist-train", family=family, armt_variant=variant, num_layers=3, d_model=16, num_heads=2,
                  num_kv_heads=1, mlp_dim=24, vocab_size=29, segment_len=5, mem_tokens=2, mem_key_dim=4,
                  dtype_bytes=4)  # fmt: skip
    return build_model(ModelSpec(**{**fields, **changes}), seed=1, dtype=dtype)


def batch(model: StackedModel, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[2, NUM_TOKENS]`` and next-token targets (the last token scored against the first)."""
    inputs = torch.randint(0, model.spec.vocab_size, (2, NUM_TOKENS), generator=torch.Generator().manual_seed(seed))
    return inputs, torch.roll(inputs, -1, dims=1)


def train_graph(model: StackedModel, truncation: int | None) -> TrainGraph:
    return TrainGraph(model_graph(model, NUM_TOKENS), truncation)


def pipelined(graph: TrainGraph, num_devices: int) -> TrainSchedule:
    return make_train_schedule(graph, "pipelined", num_devices=num_devices)


def segments_alternating(graph: TrainGraph) -> TrainSchedule:
    """The sequential schedule with cells of even segments on device 0, odd on device 1: every layer's
    weights (not only the global ones) are used on both devices, and memory states cross devices too."""
    sequential = make_train_schedule(graph, "sequential")
    steps = tuple(TrainStep(step.phase, (cell,), cell.segment % 2) for step in sequential.steps for cell in step.cells)
    device = {node: step.device for step in steps for node in step.nodes()}
    transfers = dict.fromkeys(
        TrainTransfer(pred, device[pred], device[node])
        for node in device
        for pred in graph.predecessors(node)
        if device[pred] != device[node]
    )
    return TrainSchedule(steps, "segments-alternating", {}, tuple(transfers), num_devices=2)

