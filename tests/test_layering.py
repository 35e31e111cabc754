"""Imports point one way: the layer table in README.md's Architecture section, enforced on every module.

Every ``import`` and ``from ... import`` under ``rmtsched/`` is read with ``ast`` (module level and inside
functions alike, since a lazy import is still an arrow), resolved to a layer, and checked against the
table below, which is README's table. A failure names the file, the line and the arrow that runs back up.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rmtsched"

# Bottom to top. A module may import its own layer and any tier below its own, never a peer in its tier
# (``sim`` and ``backends`` are two interpreters of one schedule and know nothing of each other).
TIERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("fileio",),
    ("sched",),
    ("specs",),
    ("sim", "backends"),
    ("calibrate",),
    ("api",),
    ("__init__",),  # the package root, rmtsched/__init__.py (it exports the api lazily)
    ("cli",),
    ("__main__",),
)
TIER_OF = {layer: tier for tier, layers in enumerate(TIERS) for layer in layers}


@dataclass(frozen=True)
class Arrow:
    """``source`` (a file under rmtsched/) imports ``target`` (a dotted rmtsched module) at ``line``."""

    source: Path
    line: int
    target: str

    @property
    def importer(self) -> str:
        return layer_of_path(self.source)

    @property
    def imported(self) -> str:
        return layer_of_module(self.target)

    def __str__(self) -> str:
        return f"rmtsched/{self.source.relative_to(PACKAGE)}:{self.line} imports {self.target}"


def layer_of_module(dotted: str) -> str:
    """``rmtsched.sim.engine`` -> ``sim``; ``rmtsched.errors`` -> ``errors``; ``rmtsched`` -> ``__init__``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of_path(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def module_name(path: Path) -> str:
    parts = ["rmtsched", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(node: ast.AST, path: Path) -> list[str]:
    """The dotted modules one import statement names, relative imports resolved against ``path``.

    ``from rmtsched import sched`` imports the subpackage, not the package root, so names imported from
    the root that are modules count as those modules.
    """
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level == 0:
        source = node.module or ""
    else:
        package = module_name(path).split(".")
        if path.name != "__init__.py":
            package = package[:-1]
        base = package[: len(package) - node.level + 1]
        source = ".".join([*base, node.module] if node.module else base)
    if source != "rmtsched":
        return [source]
    return [f"rmtsched.{alias.name}" if is_module(alias.name) else source for alias in node.names]


def is_module(name: str) -> bool:
    return (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()


def arrows(path: Path) -> list[Arrow]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = [
        Arrow(path, node.lineno, target)
        for node in ast.walk(tree)
        for target in imported_modules(node, path)
        if target == "rmtsched" or target.startswith("rmtsched.")
    ]
    return sorted(found, key=lambda arrow: arrow.line)


def runs_back_up(arrow: Arrow) -> bool:
    """True when the arrow goes to a higher tier, or sideways to a peer layer of the same tier."""
    importer, imported = arrow.importer, arrow.imported
    return importer != imported and TIER_OF[imported] >= TIER_OF[importer]


ALL_FILES = sorted(PACKAGE.rglob("*.py"))
ALL_ARROWS = [arrow for path in ALL_FILES for arrow in arrows(path)]


def test_every_module_belongs_to_a_layer_of_the_table() -> None:
    unknown = sorted({layer_of_path(path) for path in ALL_FILES} - TIER_OF.keys())
    assert not unknown, f"top-level modules {unknown} are in no layer: add them to README's table and to TIERS"


def test_every_import_names_a_known_layer() -> None:
    unknown = [str(arrow) for arrow in ALL_ARROWS if arrow.imported not in TIER_OF]
    assert not unknown, "imports of modules in no layer:\n" + "\n".join(unknown)


def test_no_import_runs_back_up() -> None:
    known = [arrow for arrow in ALL_ARROWS if {arrow.importer, arrow.imported} <= TIER_OF.keys()]
    bad = [f"{arrow}  ({arrow.importer} -> {arrow.imported})" for arrow in known if runs_back_up(arrow)]
    assert not bad, "imports that run back up the layer table:\n" + "\n".join(bad)


def test_the_parser_finds_every_form_of_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards the test itself, on a made-up package: lazy, relative and from-root imports are all arrows."""
    package = tmp_path / "rmtsched"
    (package / "sched").mkdir(parents=True)
    (package / "sim").mkdir()
    source = package / "sched" / "x.py"
    source.write_text(
        "import rmtsched.errors\n"
        "from rmtsched import sim, __version__\n"
        "from . import dag\n"
        "from ..cli import main\n"
        "def lazy():\n"
        "    from rmtsched.backends.torch import execute\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    found = [(arrow.line, arrow.target) for arrow in arrows(source)]
    assert found == [
        (1, "rmtsched.errors"),
        (2, "rmtsched.sim"),
        (2, "rmtsched"),
        (3, "rmtsched.sched"),
        (4, "rmtsched.cli"),
        (6, "rmtsched.backends.torch"),
    ]
    assert [runs_back_up(arrow) for arrow in arrows(source)] == [False, True, True, False, True, True]


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("sched", "sim"),
        ("sched", "specs"),
        ("specs", "backends"),
        ("sim", "backends"),
        ("backends", "sim"),
        ("calibrate", "cli"),
        ("backends", "cli"),
        ("errors", "sched"),
        ("fileio", "sched"),
        ("api", "cli"),
    ],
)
def test_an_upward_or_sideways_arrow_is_caught(importer: str, imported: str) -> None:
    assert runs_back_up(Arrow(PACKAGE / importer / "x.py", 1, f"rmtsched.{imported}.y"))


@pytest.mark.parametrize(
    ("importer", "imported"),
    [("sim", "sched"), ("backends", "specs"), ("calibrate", "sim"), ("calibrate", "backends"), ("cli", "api")],
)
def test_a_downward_arrow_is_allowed(importer: str, imported: str) -> None:
    assert not runs_back_up(Arrow(PACKAGE / importer / "x.py", 1, f"rmtsched.{imported}.y"))


def readme_order() -> str:
    """README's line for the table: tiers bottom to top joined by ' < ', peers of one tier by ' | '."""
    return " < ".join(" | ".join(f"`{layer}`" for layer in tier) for tier in TIERS)


def test_the_table_is_the_one_readme_states() -> None:
    readme = (PACKAGE.parent / "README.md").read_text()
    assert readme_order() in readme, f"README.md's Architecture section must state the layer order {readme_order()}"
