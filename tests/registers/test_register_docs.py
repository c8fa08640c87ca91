"""The committed register docs are generated from the table and must not be stale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pm4324.registers import docs
from pm4324.registers.table import load_map

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("rel", sorted(docs.outputs()))
def test_committed_docs_are_fresh(rel):
    committed = ROOT / rel
    assert committed.is_file(), f"{rel} is missing: run `{docs.COMMAND}`"
    assert committed.read_text(encoding="utf-8") == docs.outputs()[rel], (
        f"{rel} is stale: run `{docs.COMMAND}` and commit the result"
    )


def test_json_lists_every_point():
    data = json.loads(docs.render_json(load_map()))
    assert len(data["points"]) == len(load_map().points)
    first = data["points"][0]
    assert (first["address_hex"], first["modicon"], first["evidence"]) == ("0x1000", 4097, "M")


def test_markdown_has_legend_and_every_row():
    md = docs.render_markdown(load_map())
    for tag in ("[M]", "[P]", "[S]", "[D]", "[ours]"):
        assert f"| {tag} |" in md
    for p in load_map().points:
        assert f"| {p.name} |" in md
