"""One rank's whole job once its process group is up: build the stage, run the plan, report.

Both launchers (rmtsched's own, and ``torchrun`` through ``worker.py``) end up here, so a rank behaves the
same however it was started. Every rank builds its stage from the same factory (same seed, so the same
weights as the one-process model), holding only its layers' weights and states when the model allows.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.distributed as dist

from rmtsched.backends.distributed.comm import PeerLink
from rmtsched.backends.distributed.errors import StepFailure
from rmtsched.backends.distributed.executor import Progress, StageExecutor, StageTimes
from rmtsched.backends.distributed.plan import RankPlan
from rmtsched.backends.distributed.sink import SegmentSink
from rmtsched.backends.protocol import RecurrentModel
from rmtsched.backends.torch.session import peak_memory
from rmtsched.errors import SpecError

# A picklable callable building the whole model on a device, e.g. functools.partial(build, spec, seed=0).
ModelFactory = Callable[..., RecurrentModel]


class LaunchedJob(Protocol):
    """What the launcher pickles for a rank: a model factory and a ``run`` that returns the rank's report."""

    model_factory: ModelFactory

    def run(self, device: torch.device, progress: Progress | None = None) -> Any: ...


@dataclass(frozen=True)
class RankJob:
    """Everything a rank needs. ``inputs`` (token ids ``[batch, N]`` or embeddings ``[batch, N, d]``) only
    travel to the rank that runs layer 0; the others need the batch size alone, for their initial states.
    ``warmup_plan`` (same stage, a short prefix of the input) runs once untimed before the timed repeats,
    so first-call costs (allocator, rotary tables, GEMM probes) stay out of the times."""

    model_factory: ModelFactory
    inputs: torch.Tensor | None
    batch_size: int
    plan: RankPlan
    repeat: int = 1
    keep_outputs: bool = False
    warmup_plan: RankPlan | None = None

    def run(self, device: torch.device, progress: Progress | None = None) -> RankReport:
        """What the launcher's rank process calls (every job type it starts has this method)."""
        return run_job(self, device, progress)


@dataclass
class RankReport:
    """What a rank hands back: per-repeat times, the output hash (last stage only), states of its layers."""

    rank: int
    layers: tuple[int, int]
    holds_all_layers: bool
    times: list[StageTimes]
    output_sha256: str | None
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)
    final_state: dict[str, torch.Tensor] = field(default_factory=dict)
    peak_memory_bytes: int = 0
    nonfinite_outputs: int = 0  # NaN/inf values in the outputs (last stage only), as a one-process run counts


def build_stage_model(factory: ModelFactory, plan: RankPlan, device: torch.device) -> tuple[RecurrentModel, int, bool]:
    """The model this rank runs, the state row of its first layer, and whether it holds every layer.

    Models index layers globally; a stage model also says which layers it holds in ``layers`` (a range).
    A factory that takes ``layers`` builds only the stage (the full model's weights for those layers, never
    materialising the rest); otherwise the full model is built and cut with ``slice_layers(start, stop)``
    when it has that hook, or kept whole.
    """
    if _accepts_layers(factory):
        model = factory(device=device, layers=plan.layers)
    else:
        model = factory(device=device)
        if getattr(model, "slice_layers", None) is not None:
            model = model.slice_layers(plan.layers.start, plan.layers.stop)
    if model.num_layers != plan.num_layers:
        raise SpecError(
            f"the model factory built a {model.num_layers}-layer model, the schedule plans {plan.num_layers}"
        )
    if bool(model.uses_previous_output) != plan.uses_previous_output:
        raise SpecError(
            f"the model's uses_previous_output is {model.uses_previous_output}, but the schedule was planned "
            f"for {plan.uses_previous_output}"
        )
    held = getattr(model, "layers", range(model.num_layers))
    if plan.layers.start < held.start or plan.layers.stop > held.stop:
        raise SpecError(f"rank {plan.rank} needs layers {plan.layers} but its model holds {held}")
    return model, plan.layers.start - held.start, held == range(plan.num_layers)


def _executor(
    model: RecurrentModel, plan: RankPlan, state_row: int, device: torch.device, progress: Progress | None
) -> StageExecutor:
    link_factory = (lambda on_wait: PeerLink(plan, device, on_wait=on_wait)) if plan.world_size > 1 else None
    return StageExecutor(model, plan, state_row=state_row, link_factory=link_factory, progress=progress)


def _stage_inputs(inputs: torch.Tensor | None, plan: RankPlan, batch_size: int) -> torch.Tensor:
    """The inputs of ``plan``'s tokens; ranks without layer 0 get a ``[batch, N, 0]`` stand-in, since the
    step runner only reads the batch size and the token count from them."""
    num_tokens = sum(plan.segment_tokens)
    if inputs is None:
        return torch.empty(batch_size, num_tokens, 0)
    return inputs[:, :num_tokens]


def _accepts_layers(factory: ModelFactory) -> bool:
    try:
        return "layers" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def run_job(job: RankJob, device: torch.device, progress: Progress | None = None) -> RankReport:
    """Run the plan ``job.repeat`` times (fresh states each time, ranks aligned by a barrier before each)."""
    plan = job.plan
    model, state_row, holds_all = build_stage_model(job.model_factory, plan, device)
    if progress is not None:
        progress(-1, "setup", plan.rank, None)
    if plan.runs_first_layer and job.inputs is None:
        raise ValueError(f"rank {plan.rank} runs layer 0 but was given no inputs")
    inputs = job.inputs.to(device) if plan.runs_first_layer else None
    distributed = dist.is_available() and dist.is_initialized()
    if job.warmup_plan is not None:
        warmup = _executor(model, job.warmup_plan, state_row, device, progress)
        try:
            with torch.inference_mode():
                warmup.run(_stage_inputs(inputs, job.warmup_plan, job.batch_size), SegmentSink())
        except StepFailure as exc:
            raise StepFailure(exc.rank, exc.step, f"warm-up {exc.where}", exc.cause) from exc.cause
    executor = _executor(model, plan, state_row, device, progress)
    inputs = _stage_inputs(inputs, plan, job.batch_size)
    times, sink, state = [], SegmentSink(), {}
    for repeat in range(job.repeat):
        if distributed:
            _barrier(plan, progress)
        sink = SegmentSink(keep_outputs=job.keep_outputs and repeat == job.repeat - 1)
        with torch.inference_mode():
            run_times, state = executor.run(inputs, sink)
        times.append(run_times)
    if distributed:
        _barrier(plan, progress)
    return RankReport(
        rank=plan.rank,
        layers=(plan.layers.start, plan.layers.stop),
        holds_all_layers=holds_all,
        times=times,
        output_sha256=sink.sha256() if plan.runs_last_layer else None,
        outputs=sink.outputs,
        final_state=state,
        peak_memory_bytes=_peak_memory_bytes(device),
        nonfinite_outputs=sink.digest.nonfinite if plan.runs_last_layer else 0,
    )


def rank_device(device: str, local_rank: int) -> torch.device:
    """CPU ranks share the host; CUDA rank r uses GPU r of its machine."""
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _barrier(plan: RankPlan, progress: Progress | None) -> None:
    """``dist.barrier()``, marked as a wait: a rank idling here must not look like the one that stopped."""
    if progress is not None:
        progress(-1, "barrier", -1, None)
    dist.barrier()
    if progress is not None:
        progress(-1, "setup", plan.rank, None)


def _peak_memory_bytes(device: torch.device) -> int:
    return int(peak_memory(device)[0])
