"""One rank's interpreter of a multi-device schedule: run my steps in order, receive inputs, send outputs.

The step itself is the single-process executor's ``StepRunner`` (gather inputs, one ``forward_layers``
call per contiguous run, scatter outputs): the rank only adds the traffic around it. Before a step it
receives every input produced on another rank and ``put``s it where the runner looks for it; after the
step it ``take``s every output the plan sends and starts sending it. The last stage hands every segment's
output to a sink in segment order through the single-process executor's ``OrderedDelivery``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rmtsched.backends.distributed.comm import PeerLink
from rmtsched.backends.distributed.errors import StepFailure
from rmtsched.backends.distributed.plan import RankPlan
from rmtsched.backends.distributed.sink import SegmentSink
from rmtsched.backends.protocol import LayerState, RecurrentModel
from rmtsched.backends.torch.executor import OrderedDelivery, StepRunner
from rmtsched.backends.torch.timing import synchronize
from rmtsched.sched import Cell

# progress(step index, phase, peer, cell): called when the rank starts computing a step or blocks on a peer.
Progress = Callable[[int, str, int, Cell | None], None]


@dataclass(frozen=True)
class StageTimes:
    """Seconds one rank spent in one run: computing (everything but blocking on peers), blocked on
    receives or sends, and in total from its start to its last send completing."""

    busy_s: float
    wait_s: float
    wall_s: float


class StageExecutor:
    """Runs a ``RankPlan`` on a model holding (at least) the plan's layers, indexed globally.

    ``state_row`` is the row of the model's state tensors that holds global layer ``plan.layers.start``
    (0 for a model sliced to the stage, the layer index for a whole model). ``link_factory`` is None on a
    one-process run, whose plan has no sends or receives.
    """

    def __init__(
        self,
        model: RecurrentModel,
        plan: RankPlan,
        *,
        state_row: int,
        link_factory: Callable[[Callable[[str, int, Cell], None]], PeerLink] | None,
        progress: Progress | None = None,
    ):
        self.model = model
        self.plan = plan
        self.state_row = state_row
        self.link_factory = link_factory
        self.progress = progress or (lambda index, phase, peer, cell: None)
        self._source_rank = {cell: src for src, cells in plan.recvs.items() for cell in cells}
        self._index, self._cell = -1, None

    def run(self, inputs: torch.Tensor, sink: SegmentSink) -> tuple[StageTimes, LayerState]:
        """One pass over the plan from fresh states; returns the times and this rank's final layer states.

        ``inputs`` are the user's inputs on the rank that runs layer 0; elsewhere anything of shape
        ``[batch, N, ...]`` (the runner reads only the batch size and the token count from it).
        """
        runner = StepRunner(self.model, inputs)
        delivery = OrderedDelivery(self.model, sink, collect=False)
        link = self.link_factory(self._on_wait) if self.link_factory else None
        device = getattr(self.model, "device", None)
        synchronize(device)  # on CUDA, time the GPU work of this pass, not the host's enqueueing of it
        start = time.perf_counter()
        where = "setup"
        try:
            if link is not None:
                link.prefetch()
            for index, cells in self.plan.steps:
                self._index, self._cell = index, cells[0]
                where = f"step {index} (cells {[tuple(c) for c in cells]})"
                self.progress(index, "compute", self.plan.rank, cells[0])
                self._receive_inputs(cells, runner, link)
                for segment, hidden in runner.run_step(cells):
                    delivery.add(segment, hidden)
                self._send_outputs(cells, runner, link)
            where = "the end of the run"
            self._check_delivered(delivery)
            where = "the final sends"
            if link is not None:
                link.finish()
        except Exception as exc:
            raise StepFailure(self.plan.rank, self._index if self._index >= 0 else None, where, exc) from exc
        synchronize(device)
        wall_s = time.perf_counter() - start
        wait_s = link.wait_s if link is not None else 0.0
        times = StageTimes(busy_s=wall_s - wait_s, wait_s=wait_s, wall_s=wall_s)
        return times, self._own_state(runner.state)

    def _check_delivered(self, delivery: OrderedDelivery) -> None:
        if self.plan.runs_last_layer and delivery.next_segment != self.plan.num_segments:
            raise RuntimeError(
                f"segments {sorted(delivery.pending)} finished but segment {delivery.next_segment} never did"
            )

    def _receive_inputs(self, cells: tuple[Cell, ...], runner: StepRunner, link: PeerLink | None) -> None:
        for cell in cells:
            source = self.plan.data_source(cell)
            if source is not None and source in self._source_rank:
                runner.put(source, link.recv(source, self._source_rank[source]))

    def _send_outputs(self, cells: tuple[Cell, ...], runner: StepRunner, link: PeerLink | None) -> None:
        for cell in cells:
            destinations = self.plan.sends.get(cell, ())
            if destinations:
                # Sent outputs have no consumer on this rank (one consumer per output), so take frees them.
                hidden = runner.take(cell)
                for dst in destinations:
                    link.send(hidden, cell, dst)
        if link is not None:
            link.prefetch()

    def _on_wait(self, phase: str, peer: int, cell: Cell) -> None:
        # After a wait the rank computes its step again: show the step's cell, not the one it waited for.
        self.progress(self._index, phase, peer, self._cell if phase == "compute" else cell)

    def _own_state(self, state: LayerState) -> LayerState:
        """This rank's layers' final states, as host copies (the model may hold other layers' rows too)."""
        own = slice(self.state_row, self.state_row + len(self.plan.layers))
        return {name: tensor[own].detach().to("cpu", copy=True) for name, tensor in state.items()}
