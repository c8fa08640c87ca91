"""Data flows one way: source -> metering -> device -> registers -> protocols, and
snapshot -> history / web / mqtt -> billing. ``security`` (roles, the guard, the audit log)
sits beside config: every interface may ask it, it asks nobody.

A module may import only from its own layer, from ``config`` (shared settings), and from the
layers before it. This walks every module's imports (static, via ast) so a shortcut backwards
fails here rather than in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pm4324"

# layer -> the layers it may import besides itself, config and snapshot (shared by every layer).
# Services (history, hub, web, mqtt, billing) never import metering or protocols.
SERVICES = {"snapshot", "registers", "client", "history", "security", "wiring_check"}
ALL = {"sources", "metering", "device", "registers", "protocols", "client", "history", "hub",
       "web", "mqtt", "billing", "fleet", "cli", "app", "security", "faults", "wiring_check"}
ALLOWED = {
    "config": set(),
    "snapshot": set(),
    "security": set(),
    "sources": set(),
    "metering": set(),
    "device": {"sources", "metering"},
    "registers": {"device", "security"},
    "protocols": {"registers", "device", "security"},
    # the CANopen master builds its object dictionary with the slave's own EDS generator
    "client": {"registers", "protocols"},
    "history": set(),
    # pure functions over snapshots (the wiring check): a service every interface may use
    "wiring_check": set(),
    "hub": SERVICES,
    "web": SERVICES,
    "mqtt": SERVICES,
    "billing": SERVICES,
    # the switch and log of every fault of a running meter: measurement, device, protocol
    "faults": {"sources", "device", "protocols"},
    "fleet": ALL - {"cli", "app"},
    "cli": ALL,
    "app": ALL,
}
# Deliberate exceptions, each with its reason.
EXCEPTIONS = {
    # the scenario states exact expected values per CT, which needs the wiring definitions
    ("sources/scenario.py", "metering"),
    # the scenario's minute truth (history synth) needs the same wiring definitions
    ("sources/truth.py", "metering"),
}


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem


def _imported_layers(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "pm4324" and len(parts) > 1:
                found.add(parts[1])
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if _layer(p) in ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path: Path):
    layer = _layer(path)
    rel = str(path.relative_to(PACKAGE))
    allowed = ALLOWED[layer] | {layer, "config", "snapshot"}
    wrong = {x for x in _imported_layers(path) - allowed if (rel, x) not in EXCEPTIONS}
    assert not wrong, f"{rel} ({layer}) imports {sorted(wrong)}: against the data flow"


def test_every_module_has_a_layer():
    assert {_layer(p) for p in PACKAGE.rglob("*.py")} - {"__init__"} <= set(ALLOWED)


def test_test_module_basenames_are_unique() -> None:
    """Test folders have no ``__init__.py``: pytest imports test modules by basename, so two
    files with one name break the collection of the whole suite (checked here, where every
    pre-landing run sees it)."""
    tests = Path(__file__).resolve().parent
    names = [p.name for p in tests.rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
