"""Golden schedules: each built-in scheduler's output on small grids, checked in as JSON and compared exactly.

A scheduler change that moves one cell shows up here as a readable diff of steps. The files in
``tests/sched/golden/`` hold the case (graph and options), the schedule (``Schedule.to_dict``) one step a
line, and ``render_grid``'s picture. To accept a deliberate change, regenerate them and review the diff:

    python -m tests.sched.test_sched_golden       # from the repository root: rewrites golden/*.json from CASES
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rmtsched.sched import CellGraph, Schedule, build_cell_graph, make_schedule, render_grid, validate

GOLDEN = Path(__file__).resolve().parent / "golden"
REGENERATE = "if the change is deliberate, regenerate from the repository root: python -m tests.sched.test_sched_golden"

# A small irregular DAG for greedy: a 3 x 4 layer-local grid with two edges dropped and two long edges added.
DROPPED = {((1, 1), (2, 1)), ((0, 1), (0, 2))}
IRREGULAR_EDGES = [
    *([list(edge[0]), list(edge[1])] for edge in build_cell_graph(3, 4).edges() if edge not in DROPPED),
    [[0, 0], [2, 3]],
    [[1, 1], [0, 3]],
]

CASES: dict[str, dict[str, Any]] = {
    "sequential_L4_S8": {"layers": 4, "segments": 8, "scheduler": "sequential"},
    "diagonal_L4_S8": {"layers": 4, "segments": 8, "scheduler": "diagonal"},
    "diagonal_L4_S8_width2": {"layers": 4, "segments": 8, "scheduler": "diagonal", "options": {"max_width": 2}},
    "pipelined_L4_S8_P2": {"layers": 4, "segments": 8, "scheduler": "pipelined", "options": {"num_devices": 2}},
    "pipelined_L6_S4_P3_uneven_costs": {
        "layers": 6,
        "segments": 4,
        "scheduler": "pipelined",
        "options": {"num_devices": 3, "layer_costs": [3.0, 1.0, 1.0, 1.0, 2.0, 1.0]},
    },
    "greedy_irregular_L3_S4_width2": {
        "layers": 3,
        "segments": 4,
        "rule": {"edges": IRREGULAR_EDGES},
        "scheduler": "greedy",
        "options": {"max_width": 2},
    },
    "diagonal_rmt_global_memory_L3_S3": {"layers": 3, "segments": 3, "rule": "global_memory", "scheduler": "diagonal"},
    "pipelined_rmt_global_memory_L4_S3_P2": {
        "layers": 4,
        "segments": 3,
        "rule": "global_memory",
        "scheduler": "pipelined",
        "options": {"num_devices": 2},
    },
}


def graph_of(case: dict[str, Any]) -> CellGraph:
    rule = case.get("rule", "layer_local")
    if isinstance(rule, dict):
        rule = [(tuple(source), tuple(target)) for source, target in rule["edges"]]
    return build_cell_graph(case["layers"], case["segments"], rule=rule)


def schedule_of(case: dict[str, Any]) -> Schedule:
    options = dict(case.get("options", {}))
    if "layer_costs" in options:
        options["layer_costs"] = tuple(options["layer_costs"])
    return make_schedule(graph_of(case), case["scheduler"], **options)


def golden_text(case: dict[str, Any]) -> str:
    """The golden file of ``case``: valid JSON laid out so a changed step is a one-line diff."""
    schedule = schedule_of(case)
    data = schedule.to_dict()
    head = {key: value for key, value in data.items() if key not in ("steps", "transfers")}

    def listing(items: list) -> str:
        return "[\n" + ",\n".join(f"    {json.dumps(item)}" for item in items) + "\n  ]" if items else "[]"

    fields = [f'"case": {json.dumps(case)}']
    fields += [f"{json.dumps(key)}: {json.dumps(value)}" for key, value in head.items()]
    fields += [f'"{key}": {listing(data[key])}' for key in ("steps", "transfers")]
    fields.append(f'"grid": {listing(render_grid(schedule, graph_of(case)).splitlines())}')
    return "{\n  " + ",\n  ".join(fields) + "\n}\n"


def read_golden(name: str) -> dict[str, Any]:
    return json.loads((GOLDEN / f"{name}.json").read_text())


def test_every_case_has_a_golden_file_and_every_file_a_case() -> None:
    assert sorted(path.stem for path in GOLDEN.glob("*.json")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_scheduler_output_equals_its_golden_schedule(name: str) -> None:
    golden = read_golden(name)
    assert golden["case"] == CASES[name]
    expected = {key: value for key, value in golden.items() if key not in ("case", "grid")}
    assert schedule_of(CASES[name]).to_dict() == expected, REGENERATE


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_schedules_are_valid_and_their_grids_match(name: str) -> None:
    golden = read_golden(name)
    graph = graph_of(golden["case"])
    schedule = Schedule.from_dict(golden)
    validate(schedule, graph)
    assert render_grid(schedule, graph).splitlines() == golden["grid"]


def test_golden_layout_is_the_one_regeneration_writes() -> None:
    """The files are exactly what ``golden_text`` writes, so a regeneration diff shows only real changes."""
    for name, case in CASES.items():
        assert (GOLDEN / f"{name}.json").read_text() == golden_text(case), REGENERATE


if __name__ == "__main__":
    import rmtsched

    print(f"writing golden schedules from the rmtsched in {Path(rmtsched.__file__).parent}")
    for path in GOLDEN.glob("*.json"):
        path.unlink()
    for name, case in CASES.items():
        (GOLDEN / f"{name}.json").write_text(golden_text(case))
        print(f"wrote {GOLDEN / name}.json")
