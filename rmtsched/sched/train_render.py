"""The training schedule as a picture: one L x S grid of step numbers per phase (F, then R if any, then B).

Step numbers are global, so interleaved forward and backward steps (1F1B) show as such; marked cells show
as ``[n]``, which is how the training validator points at the cell its error names.
"""

from __future__ import annotations

from collections.abc import Collection

from rmtsched.sched.render import GRID_NOTE_LIMIT, grid_rows
from rmtsched.sched.train_dag import Phase, TrainCell, TrainGraph
from rmtsched.sched.train_schedule import TrainSchedule

PHASE_TITLES = {Phase.FORWARD: "forward", Phase.RECOMPUTE: "recompute", Phase.BACKWARD: "backward"}


def render_train_grid(
    schedule: TrainSchedule,
    graph: TrainGraph,
    max_segments: int = 48,
    *,
    max_layers: int | None = None,
    marked: Collection[TrainCell] = (),
) -> str:
    """Each phase's grid of step numbers (layer rows top to bottom), then a one-line summary."""
    lines: list[str] = []
    for phase in Phase:
        steps = schedule.phase_steps(phase)
        step_of = {cell: index for index, step in steps for cell in step.cells}
        if not step_of and phase is Phase.RECOMPUTE:
            continue
        device_of = None
        if schedule.num_devices > 1:
            device_of = {cell: step.device for _, step in steps for cell in step.cells}
        phase_marks = [node.cell for node in marked if node.phase is phase]
        lines.append(f"{PHASE_TITLES[phase]} ({phase.value}):")
        lines += grid_rows(graph.forward, step_of, max_segments, max_layers=max_layers, marked=phase_marks,
                           device_of=device_of, widest=schedule.num_steps)
    counts = ", ".join(f"{len(schedule.phase_steps(phase))} {phase.value}" for phase in Phase)
    truncation = "full BPTT" if graph.truncation is None else f"BPTT over the last {graph.truncation} segments"
    lines.append(
        f"{schedule.scheduler}: {schedule.num_steps} steps ({counts}), "
        f"{len(schedule.recomputed)} recomputed cells, max width {schedule.max_width}, "
        f"{schedule.num_devices} device(s), {truncation}"
    )
    return "\n".join(lines)


def train_grid_note(schedule: TrainSchedule, graph: TrainGraph, marked: Collection[TrainCell]) -> str:
    """The grids a training validation error attaches, with the cells it names marked."""
    grid = render_train_grid(schedule, graph, GRID_NOTE_LIMIT, max_layers=GRID_NOTE_LIMIT, marked=marked)
    return f"the training schedule (each cell shows its step; [n] marks the cells named above):\n{grid}"


__all__ = ["render_train_grid", "train_grid_note"]
