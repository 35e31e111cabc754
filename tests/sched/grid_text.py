"""Read ``render_grid``'s text back into cells, so tests state what the picture shows, not how it is padded."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rmtsched.sched import Cell

ENTRY = re.compile(r"\[\s*([^\]\s]+)\]|([^\s\[\]]+)")  # "[ 4]" (marked) or "4"


@dataclass(frozen=True)
class Entry:
    """What the grid shows for one cell: its step number (or '.') and whether it is marked."""

    value: str
    marked: bool = False


def parse_grid(text: str) -> dict[Cell, Entry]:
    """Every cell the grid shows. The header names the segments; each row starts with its layer."""
    lines = text.splitlines()
    segments = [int(value) for value, _ in _entries(lines[0].removeprefix("layer\\seg"))]
    grid = {}
    for line in lines[1:]:
        if not line[:9].strip().isdigit():
            break
        layer = int(line[:9])
        row = _entries(line[9:].split("(device")[0])
        assert len(row) == len(segments), f"row of layer {layer} has {len(row)} entries for {len(segments)} segments"
        for segment, (value, marked) in zip(segments, row, strict=True):
            grid[Cell(layer, segment)] = Entry(value, marked)
    return grid


def _entries(text: str) -> list[tuple[str, bool]]:
    return [(marked or plain, bool(marked)) for marked, plain in ENTRY.findall(text)]
