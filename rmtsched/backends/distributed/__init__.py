"""Multi-process execution of multi-device schedules on torch.distributed (gloo on CPU, NCCL on GPUs).

Each rank holds one contiguous stage of layers and interprets its share of the same schedule IR the
single-process executor runs, sending hidden states point to point. ``run_pipelined`` launches P local
processes; ``python -m rmtsched.cli.torchrun_worker`` is the entry point for ``torchrun``;
``train_pipelined`` runs a training schedule on P local CPU processes, gradients equal to one process's. A
failed run raises ``DistributedError`` (a ``RunFailure``), a configuration the ranks cannot run
``DistributedConfigError`` (bad input); both name the rank and the step.
"""

from rmtsched.backends.distributed.errors import DistributedConfigError, DistributedError
from rmtsched.backends.distributed.launch import run_pipelined
from rmtsched.backends.distributed.plan import RankPlan, build_plans
from rmtsched.backends.distributed.result import PipelineResult, RankSummary
from rmtsched.backends.distributed.sink import outputs_sha256
from rmtsched.backends.distributed.train_launch import train_pipelined, train_step_pipelined

__all__ = [
    "DistributedConfigError",
    "DistributedError",
    "PipelineResult",
    "RankPlan",
    "RankSummary",
    "build_plans",
    "outputs_sha256",
    "run_pipelined",
    "train_pipelined",
    "train_step_pipelined",
]
