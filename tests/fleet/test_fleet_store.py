"""The fleet's energy store: one commit for all members, restored by key with each member's
identity; a damaged slot costs one commit, never a silent reset; the wrong file is refused."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pm4324.device.recovery import StoreError
from pm4324.fleet.store import SLOTS, FleetStore

KEYS = ["a", "b", "c"]


def _fill(store: FleetStore, value: int) -> None:
    regs = store.registers
    with regs.lock:
        regs.micro[:] = value + np.arange(len(store.keys))[:, None, None]
        regs.remainder[:] = 0.25
        regs.relays[:, 0] = True


def test_restart_restores_every_member_by_key(tmp_path):
    store = FleetStore.open(tmp_path / "f", KEYS)
    ids = store.meter_ids
    assert len(set(ids)) == 3 and store.boot == 1
    _fill(store, 1000)
    store.commit()
    store.close()
    again = FleetStore.open(tmp_path / "f", ["c", "a", "new"])
    assert again.boot == 2 and again.meter_ids[:2] == [ids[2], ids[0]]
    assert again.meter_ids[2] not in ids
    regs = again.registers
    assert regs.micro[0, 0, 0] == 1002 and regs.micro[1, 5, 3] == 1000
    assert regs.remainder[1, 0, 0] == 0.25 and regs.relays[0, 0]
    assert not regs.micro[2].any() and not regs.relays[2].any()
    assert any("1 new member" in n for n in again.restored.notes)
    again.close()


def test_a_damaged_slot_costs_one_commit(tmp_path):
    store = FleetStore.open(tmp_path / "f", KEYS)
    for value in (10, 20):
        _fill(store, value)
        store.commit()
    newest, slot = store.seq, store.slot_size
    os.close(store._fd)  # a crash: no last commit
    with open(tmp_path / "f.ring", "r+b") as f:  # flip a bit in the newest commit's registers
        f.seek((newest % SLOTS) * slot + 200)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x10]))
    again = FleetStore.open(tmp_path / "f", KEYS)
    assert again.restored.seq == newest - 1
    assert again.registers.micro[0, 0, 0] == 10  # one commit back
    assert any("CRC" in n for n in again.restored.notes)
    again.close()


def test_no_intact_record_refuses_and_reset_starts_over(tmp_path):
    store = FleetStore.open(tmp_path / "f", KEYS)
    store.close()
    (tmp_path / "f.ring").write_bytes(b"\0" * 8192)
    with pytest.raises(StoreError, match="no intact record"):
        FleetStore.open(tmp_path / "f", KEYS)
    fresh = FleetStore.open(tmp_path / "f", KEYS, reset=True)
    assert fresh.restored.seq == 0 and not fresh.registers.micro.any()
    assert list(tmp_path.glob("f.ring.reset-*"))
    fresh.close()


def test_identity_rules(tmp_path):
    FleetStore.open(tmp_path / "f", KEYS).close()
    (tmp_path / "f.ring").rename(tmp_path / "gone")
    with pytest.raises(StoreError, match="missing, but this fleet has run before"):
        FleetStore.open(tmp_path / "f", KEYS)
    (tmp_path / "gone").rename(tmp_path / "f.ring")
    other = tmp_path / "other"
    FleetStore.open(other, KEYS).close()
    (tmp_path / "f.fleet-id").write_bytes((tmp_path / "other.fleet-id").read_bytes())
    with pytest.raises(StoreError, match="belongs to fleet"):
        FleetStore.open(tmp_path / "f", KEYS)
    (tmp_path / "f.fleet-id").unlink()
    with pytest.raises(StoreError, match="identity f.fleet-id is missing"):
        FleetStore.open(tmp_path / "f", KEYS)


def test_an_identity_that_is_no_uuid_is_refused(tmp_path):
    FleetStore.open(tmp_path / "f", KEYS).close()
    (tmp_path / "f.fleet-id").write_text("not-a-uuid\n")
    with pytest.raises(StoreError, match=r"is not a fleet identity \(a UUID\): 'not-a-uuid'"):
        FleetStore.open(tmp_path / "f", KEYS)


def test_a_second_fleet_on_the_same_store_is_refused(tmp_path):
    store = FleetStore.open(tmp_path / "f", KEYS)
    with pytest.raises(StoreError, match="in use by another running fleet"):
        FleetStore.open(tmp_path / "f", KEYS)
    store.close()
