"""Simulator benchmark: the 1M-cell sequential schedule through the event engine, side by side with
the closed form and with a naive one-simpy-process-per-step engine, plus memory per cell.

    .venv/bin/python bench/bench_sim.py                 # 1M cells (16 layers x 62,500 segments), 3 repeats
    .venv/bin/python bench/bench_sim.py --pipelined     # also the 4-device pipelined schedule at 1M cells

Times are medians over ``--repeats`` runs on this machine; the target is the DES under 10 s at 1M cells.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable

import simpy

from rmtsched.sched import CellGraph, Schedule, SchedulerOptions, make_schedule, validate
from rmtsched.sim import CostModel, analytic_simulate, simulate, workload_from_spec
from rmtsched.specs.hardware import load_hardware_spec
from rmtsched.specs.model import load_model_spec


def median_s(function: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        gc.collect()
        begin = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - begin)
    return statistics.median(times), value


def naive_des(schedule: Schedule, graph: CellGraph, cost: CostModel) -> float:
    """The textbook design: every step a simpy process that waits for its predecessors' events, then
    holds the device resource for its duration. Single device only; used here as the yardstick."""
    env = simpy.Environment()
    device = simpy.Resource(env, capacity=1)
    done = {cell: env.event() for cell in graph.cells()}
    tokens = graph.segment_tokens

    def step_process(step):
        preds = [done[p] for cell in step.cells for p in graph.predecessors(cell)]
        if preds:
            yield env.all_of(preds)
        with device.request() as request:
            yield request
            yield env.timeout(cost.step_profile(step.cells, tokens).duration_s)
        for cell in step.cells:
            done[cell].succeed()

    for step in schedule.steps:
        env.process(step_process(step))
    env.run()
    return env.now


def traced_peak_bytes(function: Callable[[], object]) -> int:
    gc.collect()
    tracemalloc.start()
    function()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=62_500, help="segments (x 16 layers = cells)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-segments", type=int, default=6_250, help="grid size for the naive comparison")
    parser.add_argument("--pipelined", action="store_true", help="also time the 4-device pipelined schedule")
    args = parser.parse_args()

    spec = load_model_spec("armt-llama-1b")
    cost = CostModel(workload_from_spec(spec), load_hardware_spec("h100-sxm"))
    graph = CellGraph(spec.num_layers, (spec.segment_len,) * args.segments)
    print(f"grid: {graph.num_layers} layers x {graph.num_segments:,} segments = {graph.num_cells:,} cells")

    build_s, schedule = median_s(lambda: make_schedule(graph, "sequential"), args.repeats)
    validate_s, _ = median_s(lambda: validate(schedule, graph), args.repeats)
    des_s, result = median_s(lambda: simulate(schedule, graph, cost, check=False), args.repeats)
    closed_s, closed = median_s(lambda: analytic_simulate("sequential", graph, cost), args.repeats)
    print(f"make_schedule(sequential)  {build_s:8.3f} s")
    print(f"validate                   {validate_s:8.3f} s")
    print(f"DES simulate               {des_s:8.3f} s   (target < 10 s)  makespan {result.makespan_s:.6f} s")
    print(f"analytic                   {closed_s * 1e3:8.3f} ms  makespan {closed.makespan_s:.6f} s "
          f"(rel diff {abs(result.makespan_s - closed.makespan_s) / closed.makespan_s:.1e})")

    small = CellGraph(spec.num_layers, (spec.segment_len,) * args.naive_segments)
    small_schedule = make_schedule(small, "sequential")
    ours_s, ours = median_s(lambda: simulate(small_schedule, small, cost, check=False), args.repeats)
    naive_s, naive_makespan = median_s(lambda: naive_des(small_schedule, small, cost), args.repeats)
    same = abs(naive_makespan - ours.makespan_s) < 1e-9 * ours.makespan_s
    print(f"at {small.num_cells:,} cells: naive per-step-process DES {naive_s:.3f} s, ours {ours_s:.3f} s "
          f"-> {naive_s / ours_s:.1f}x (same makespan: {same})")

    for segments in (args.segments // 16, args.segments // 8, args.segments // 4):
        grid = CellGraph(spec.num_layers, (spec.segment_len,) * segments)
        grid_schedule = make_schedule(grid, "sequential")
        peak = traced_peak_bytes(lambda g=grid, s=grid_schedule: simulate(s, g, cost, check=False))
        per_cell = peak / grid.num_cells
        print(f"memory: {grid.num_cells:>9,} cells -> peak {peak / 1e6:7.1f} MB traced = {per_cell:.0f} B/cell")

    if args.pipelined:
        pipe_s, pipe_schedule = median_s(lambda: make_schedule(graph, "pipelined", num_devices=4), 1)
        sim_s, pipe = median_s(lambda: simulate(pipe_schedule, graph, cost, check=False), 1)
        closed_pipe = analytic_simulate("pipelined", graph, cost, SchedulerOptions(num_devices=4))
        print(f"pipelined x4: make_schedule {pipe_s:.2f} s, DES {sim_s:.2f} s (1 run), "
              f"rel diff vs analytic {abs(pipe.makespan_s - closed_pipe.makespan_s) / closed_pipe.makespan_s:.1e}")


if __name__ == "__main__":
    main()
