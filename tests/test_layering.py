"""The one-way seams: gateway -> engines, gateway -> pricing; never back, never across."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
FORBIDDEN = {"engines": {"gateway", "pricing"}, "pricing": {"gateway", "engines"}}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_against_the_seams(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package]) for path in files
    }
    assert {path: bad for path, bad in offenders.items() if bad} == {}


# gateway/'s rooms, from the edge down: a module imports its own layer and those below, never above.
# (Imports under `if TYPE_CHECKING:` are annotations only and do not count.)
GATEWAY_LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"app", "state", "routes", "cli", "demo", "engines_cli", "__init__", "__main__"}),  # the edge
    frozenset({"admin", "console", "probes", "responses"}),
    frozenset({"inference"}),
    frozenset({"deliberation"}),
    frozenset({"http"}),
    frozenset({"accounting", "keys"}),
    frozenset({"limits", "budgets"}),
    frozenset({"database", "settings", "tiers", "refusals", "terminal", "logs"}),
)


def _layer(room: str) -> int:
    for index, rooms in enumerate(GATEWAY_LAYERS):
        if room in rooms:
            return index
    raise AssertionError(f"gateway/{room} is in no layer of GATEWAY_LAYERS: place it")


def _room(path: Path) -> str:
    parts = path.relative_to(ROOT / "gateway").with_suffix("").parts
    return parts[0]


def runtime_gateway_imports(path: Path) -> set[str]:
    """The gateway rooms a module imports at run time (`gateway.X...` -> X)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(child) for body in node.body for child in ast.walk(body))
    rooms: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        for module in modules:
            parts = module.split(".")
            if parts[0] == "gateway" and len(parts) > 1:
                rooms.add(parts[1])
    return rooms


def test_gateway_rooms_import_downwards_only() -> None:
    upward = {}
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        room = _room(path)
        above = sorted(r for r in runtime_gateway_imports(path) if _layer(r) < _layer(room))
        if above:
            upward[str(path.relative_to(ROOT))] = above
    assert upward == {}, "imports against the layers (GATEWAY_LAYERS): " + repr(upward)


def test_every_gateway_room_has_a_layer() -> None:
    rooms = {_room(path) for path in (ROOT / "gateway").rglob("*.py")}
    for room in rooms:
        _layer(room)
    assert len(list((ROOT / "gateway").glob("*.py"))) <= 12  # the root is the edge, not a drawer
