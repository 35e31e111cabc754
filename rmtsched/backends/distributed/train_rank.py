"""One rank of a multi-process training run: the single-process ``TrainRunner`` on this rank's steps only.

Every rank holds the whole model (the caller's weights, pickled to it) and a ``TrainRunner`` over the whole
schedule, but runs only its own steps: before a step it receives each value another rank wrote and
``put``s it in the runner's mailbox; after the step it ``take``s each value another rank reads and sends
it. What it hands back is what the launcher needs to fold the result exactly as one process would: the
segment losses it computed, the gradient totals of weights used only here, and the per-use contributions
of weights whose uses span ranks (the global weights, used by layer 0 and by the last layer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from rmtsched.backends.distributed.errors import StepFailure
from rmtsched.backends.distributed.executor import Progress
from rmtsched.backends.distributed.job import ModelFactory, _barrier
from rmtsched.backends.distributed.train_comm import TrainLink
from rmtsched.backends.distributed.train_plan import TrainRankPlan
from rmtsched.backends.torch.executor import model_graph
from rmtsched.backends.torch.train_executor import TrainRunner, UseKey
from rmtsched.sched import Cell, TrainGraph, TrainSchedule

FoldKey = tuple[str, int | None]  # (weight name, layer) as ``TrainRunner.folds`` keys them


@dataclass(frozen=True)
class TrainRankJob:
    """Everything a training rank needs; ``model_factory(device=...)`` builds the whole model."""

    model_factory: ModelFactory
    inputs: torch.Tensor
    targets: torch.Tensor
    truncation: int | None
    schedule: TrainSchedule
    plan: TrainRankPlan

    def run(self, device: torch.device, progress: Progress | None = None) -> TrainRankReport:
        return run_train_rank(self, device, progress)


@dataclass
class TrainRankReport:
    """A rank's share of the result: losses by segment, fold totals, per-use contributions, and its times."""

    rank: int
    losses: dict[int, torch.Tensor]
    totals: dict[FoldKey, torch.Tensor]
    uses: dict[FoldKey, dict[UseKey, torch.Tensor | None]]
    peak_held_graphs: int
    wall_s: float
    wait_s: float


def run_train_rank(job: TrainRankJob, device: torch.device, progress: Progress | None = None) -> TrainRankReport:
    """Run this rank's steps of ``job.schedule`` between two barriers (so ``wall_s`` starts together)."""
    return _TrainRank(job, device, progress or (lambda index, phase, peer, cell: None)).run()


class _TrainRank:
    """The runner, the link and where the rank is (the step and cell the progress board shows)."""

    def __init__(self, job: TrainRankJob, device: torch.device, progress: Progress):
        self.job, self.plan, self.progress = job, job.plan, progress
        model = job.model_factory(device=device)
        graph = TrainGraph(model_graph(model, int(job.inputs.shape[1])), job.truncation)
        self.runner = TrainRunner(model, job.inputs, job.targets, graph, job.schedule)
        for (_, layer), fold in self.runner.folds.items():
            if layer in self.plan.shared_folds:
                fold.uses = {}
        self.link = TrainLink(graph.num_layers, graph.num_segments, device, self._on_wait)
        self.index: int | None = None
        self.cell: Cell | None = None

    def run(self) -> TrainRankReport:
        _barrier(self.plan, self.progress)
        start = time.perf_counter()
        where = "setup"
        try:
            for index in self.plan.steps:
                step = self.job.schedule.steps[index]
                self.index, self.cell = index, step.cells[0]
                where = f"step {index} ({step.phase.value} cells {[tuple(cell) for cell in step.cells]})"
                self.progress(index, "compute", self.plan.rank, self.cell)
                self._run_step(index)
            self.index, where = None, "the final sends"
            self.link.finish()
        except Exception as exc:
            raise StepFailure(self.plan.rank, self.index, where, exc) from exc
        wall_s = time.perf_counter() - start
        _barrier(self.plan, self.progress)
        return self._report(wall_s)

    def _run_step(self, index: int) -> None:
        for crossing in self.plan.receives.get(index, ()):
            value = self.link.receive(crossing)
            if value is not None:
                self.runner.put(crossing.kind, crossing.cell, value)
        self.runner.run_step(index)
        for crossing in self.plan.sends.get(index, ()):
            # One reader per value, on the peer: taking it frees it here.
            self.link.send(crossing, self.runner.take(crossing.kind, crossing.cell, required=False))

    def _report(self, wall_s: float) -> TrainRankReport:
        folds, owned = self.runner.folds, self.plan.owned_folds
        return TrainRankReport(
            rank=self.plan.rank,
            losses=dict(self.runner.losses),
            totals={key: fold.total for key, fold in folds.items() if key[1] in owned and fold.total is not None},
            uses={key: fold.uses for key, fold in folds.items() if fold.uses is not None},
            peak_held_graphs=self.runner.peak_held,
            wall_s=wall_s,
            wait_s=self.link.wait_s,
        )

    def _on_wait(self, phase: str, peer: int, cell: Cell) -> None:
        # After a wait the rank computes its step again: show the step's cell, not the one it waited for.
        index = -1 if self.index is None else self.index
        self.progress(index, phase, peer, self.cell if phase == "compute" else cell)


__all__ = ["TrainRankJob", "TrainRankReport", "run_train_rank"]
