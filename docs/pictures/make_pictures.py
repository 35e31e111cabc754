"""Draw the committed pictures of docs/pictures: the diagonal and sequential schedules of armt-tiny.

    .venv/bin/python docs/pictures/make_pictures.py

armt-tiny (4 layers) on 8 segments, simulated on the h200 preset (eager), both drawn on one time axis so
they can stand side by side: the sequential schedule runs 32 one-cell steps, the diagonal one 11 steps
whose blocks span the layers they batch (the wavefront).
"""

from __future__ import annotations

from pathlib import Path

from rmtsched.sched import graph_for_tokens, make_schedule
from rmtsched.sim import CostModel, simulate, workload_from_spec
from rmtsched.sim.trace import plot_gantt
from rmtsched.specs.hardware import load_hardware_spec
from rmtsched.specs.model import load_model_spec

HERE = Path(__file__).parent


def main() -> None:
    spec = load_model_spec("armt-tiny")
    graph = graph_for_tokens(spec, 8 * spec.segment_len)
    cost = CostModel(workload_from_spec(spec), load_hardware_spec("h200"))
    results = {name: simulate(make_schedule(graph, name), graph, cost) for name in ("sequential", "diagonal")}
    xlim = max(result.makespan_s for result in results.values())
    for name, result in results.items():
        path = HERE / f"gantt_{name}.png"
        plot_gantt(result, path, title=f"armt-tiny, 8 segments, {name} on h200 (eager)", xlim_s=xlim)
        print(path)


if __name__ == "__main__":
    main()
