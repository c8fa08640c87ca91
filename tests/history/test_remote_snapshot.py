"""A reading decoded from registers becomes the same Snapshot as the meter's own."""

from __future__ import annotations

import json

import numpy as np
from snapshot_factory import FakeMeter, backend_reader, make_snapshot

from pm4324.client.modbus import read_meter
from pm4324.client.snapshot import snapshot_from_dict
from pm4324.history.layout import frame_from_snapshot
from pm4324.registers.image import MapBackend


def make_backend() -> tuple[MapBackend, object]:
    snap = make_snapshot()
    return MapBackend(FakeMeter(snap.settings, snap)), snap


def test_registers_to_snapshot_round_trip():
    backend, local = make_backend()
    remote = snapshot_from_dict(read_meter(backend_reader(backend)))
    a, b = frame_from_snapshot(local), frame_from_snapshot(remote)
    assert np.allclose(a.values, b.values, rtol=1e-6, equal_nan=True)  # float32 registers
    assert np.allclose(a.counters, b.counters, atol=10.0)  # 0.01 kWh integer registers
    assert remote.settings.model == local.settings.model
    assert [m.wiring for m in remote.settings.meters] == [m.wiring for m in local.settings.meters]
    assert remote.relays == local.relays and remote.time == round(local.time)


def test_dict_snapshot_dict_is_the_identity_with_names():
    _, snap = make_backend()
    d = json.loads(json.dumps(snap.to_dict()))
    names = {"meters": {"2": "Shop"}, "cts": {"4": "Shop L1"}}
    again = snapshot_from_dict(d, names).to_dict()
    d["meters"][1]["name"], d["cts"][3]["name"] = "Shop", "Shop L1"
    assert again == d
