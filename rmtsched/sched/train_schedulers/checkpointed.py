"""Memory-capped training: the diagonal schedule, storing what the budget allows and recomputing the rest.

At most ``memory_budget`` cells' forward activations are held at once. All forward steps come before the
first backward step, so every stored cell is alive at that turn; the backward pass then needs room to
rebuild one step's cells. So with w the widest step, the last ``budget - w`` cells the forward issues
are stored (they are the first the backward frees) and every other cell gets an R step immediately before
its B step: held cells never exceed ``budget - w`` + w. A budget of at least every cell recomputes nothing.
"""

from rmtsched.errors import ScheduleError
from rmtsched.sched.train_dag import Phase, TrainGraph
from rmtsched.sched.train_registry import TrainOptions, register_train_scheduler
from rmtsched.sched.train_schedule import TrainSchedule, TrainStep
from rmtsched.sched.train_schedulers.common import require_single_device, wave_batches


@register_train_scheduler("checkpointed")
def checkpointed(graph: TrainGraph, options: TrainOptions) -> TrainSchedule:
    require_single_device("checkpointed", options)
    batches = wave_batches(graph, options.max_width)
    widest = max(len(batch) for batch in batches)
    num_cells = graph.forward.num_cells
    budget = num_cells if options.memory_budget is None else options.memory_budget
    if budget < widest:
        raise ScheduleError(
            f"memory_budget={budget} cells cannot hold one step of {widest} cells being recomputed: "
            f"expected at least {widest} (or lower max_width)"
        )
    stored = num_cells if budget >= num_cells else budget - widest
    forward_order = [cell for batch in batches for cell in batch]
    keep = set(forward_order[num_cells - stored :])
    steps = [TrainStep(Phase.FORWARD, batch) for batch in batches]
    for batch in reversed(batches):
        rebuild = tuple(cell for cell in batch if cell not in keep)
        if rebuild:
            steps.append(TrainStep(Phase.RECOMPUTE, rebuild))
        steps.append(TrainStep(Phase.BACKWARD, batch))
    options_record = {"max_width": options.max_width, "memory_budget": budget, "truncation": graph.truncation}
    return TrainSchedule(tuple(steps), "checkpointed", options_record)
