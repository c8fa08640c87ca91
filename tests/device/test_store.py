"""The state store: exact restore, refusal of foreign or missing state, and damage recovery.

Every damaged-file test checks the one promise that matters: opening gives either a clear
StoreError or exactly the counters of a commit that was made (never zero, never a mix).
The truth is kept here, per commit, as the test saves it.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from pm4324.device import store as store_mod
from pm4324.device.energy import EnergyRegisters
from pm4324.device.events import Event
from pm4324.device.store import RING, Record, Store, StoreError, peek, read_events


class Meterless:
    """Saves N distinct commits and remembers each one's registers (the truth)."""

    def __init__(self, tmp: Path, name: str = "m"):
        self.path, self.id_path = tmp / "var" / f"{name}.state.db", tmp / f"{name}.meter-id"
        self.truth: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def open(self, **kw) -> Store:
        return Store.open(self.path, self.id_path, **kw)

    def fill(self, store: Store, n: int, events: bool = False) -> None:
        ct, meter = store.restored.ct, store.restored.meter
        rng = np.random.default_rng(store.last.seq)
        for k in range(n):
            ct.add(rng.uniform(0, 0.5, (24, 7)))
            meter.add(rng.uniform(0, 1.5, (8, 7)))
            ev = [Event(1.0, store.boot, k, "relay", f"e{k}")] if events else []
            r = store.save(k, ct, meter, (k % 2 == 1, k % 3 == 0), {2: 77} if k % 2 else {}, ev)
            self.truth[r.seq] = (ct.micro.copy(), meter.micro.copy())

    def assert_is_a_commit(self, r: Record) -> None:
        ct, meter = self.truth[r.seq]
        assert np.array_equal(r.ct.micro, ct) and np.array_equal(r.meter.micro, meter)
        assert r.ct.micro.sum() > 0


@pytest.fixture
def m(tmp_path) -> Meterless:
    return Meterless(tmp_path)


def closed_with(m: Meterless, n: int = 20) -> int:
    s = m.open()
    m.fill(s, n)
    newest = s.last.seq
    s.close()
    return newest


def test_first_start_then_exact_restore(m):
    s = m.open()
    assert [k for k, _ in s.notes] == ["first_start"] and s.boot == 1
    assert m.id_path.read_text().strip() == s.restored.meter_id
    assert s.restored.ct.values().sum() == 0
    m.fill(s, 5)
    saved = s.last
    s.close()
    s = m.open()
    r = s.restored
    assert s.notes == [] and s.boot == 2 and r.seq == saved.seq == 5
    m.assert_is_a_commit(r)
    assert np.array_equal(r.ct.remainder, saved.ct.remainder)  # exact to below a µWh
    assert r.relays == (False, False) and r.latched == {}
    assert (r.boot, r.second) == (1, 4)
    s.close()


def test_relays_and_latches_round_trip(m):
    s = m.open()
    s.save(0, EnergyRegisters(24), EnergyRegisters(8), (True, False), {3: 12345, 16: 1})
    s.close()
    assert peek(m.path).relays == (True, False) and peek(m.path).latched == {3: 12345, 16: 1}


def test_a_second_meter_on_the_same_file_is_refused(m):
    s = m.open()
    with pytest.raises(StoreError, match="in use by another running meter"):
        m.open()
    s.close()
    m.open().close()  # released on close (and by the kernel when a process dies)


def test_missing_state_of_a_meter_that_ran_is_an_error_not_a_reset(m):
    closed_with(m)
    m.path.unlink()
    with pytest.raises(StoreError, match="missing, but this meter has run before.*--reset-store"):
        m.open()
    s = m.open(reset=True)
    assert s.notes[0][0] == "store_reset" and s.restored.ct.values().sum() == 0
    s.close()


def test_reset_keeps_the_old_file(m):
    newest = closed_with(m)
    s = m.open(reset=True)
    s.close()
    kept = [p for p in m.path.parent.iterdir() if ".reset-" in p.name and p.name.endswith(
        tuple("0123456789"))]
    assert len(kept) == 1
    assert max(Record.decode(p).seq for p in _payloads(kept[0])) == newest


def _payloads(path: Path) -> list[bytes]:
    con = sqlite3.connect(path)
    try:
        return [bytes(p) for _, p in sorted(con.execute("SELECT seq, payload FROM ring"))]
    finally:
        con.close()


def test_identity_missing_is_refused(m):
    closed_with(m)
    m.id_path.unlink()
    with pytest.raises(StoreError, match="identity .* is missing"):
        m.open()


def test_another_meters_file_is_refused(tmp_path, m):
    closed_with(m)
    other = Meterless(tmp_path, "other")
    closed_with(other)
    shutil.copy(other.path, m.path)
    with pytest.raises(StoreError, match="belongs to another meter"):
        m.open()


def test_another_format_version_is_refused(m):
    closed_with(m)
    con = sqlite3.connect(m.path)
    con.execute("UPDATE meta SET value = '2' WHERE key = 'format_version'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="format version 2; this meter reads version 1"):
        m.open()


def test_not_a_state_file_is_refused(m):
    closed_with(m)
    m.path.unlink()
    con = sqlite3.connect(m.path)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a pm4324 state file.*no intact record"):
        m.open()


def test_empty_file_is_refused_clearly(m):
    closed_with(m)
    m.path.write_bytes(b"")
    with pytest.raises(StoreError, match="empty"):
        m.open()


def test_truncated_files_recover_a_commit_or_refuse(m):
    newest = closed_with(m, 30)
    whole = m.path.read_bytes()
    outcomes = set()
    for cut in range(0, len(whole), 512):
        m.path.write_bytes(whole[:cut])
        for leftover in m.path.parent.glob("*.damaged-*"):
            leftover.unlink()
        try:
            s = m.open()
        except StoreError as exc:
            assert "no intact record" in str(exc) or "empty" in str(exc)
            outcomes.add("refused")
            continue
        r = s.restored
        m.assert_is_a_commit(r)
        assert newest - RING < r.seq <= newest
        outcomes.add("recovered")
        assert s.notes and s.notes[0][0] == "store_recovered"
        s.close()
        m.path.write_bytes(whole)  # the next cut starts from the whole file again
    assert outcomes == {"refused", "recovered"}


def test_bit_flips_recover_a_commit_or_refuse(m):
    newest = closed_with(m, 30)
    whole = m.path.read_bytes()
    rng = random.Random(4324)
    recovered = 0
    for _ in range(150):
        data = bytearray(whole)
        pos = rng.randrange(len(data))
        data[pos] ^= 1 << rng.randrange(8)
        m.path.write_bytes(bytes(data))
        for p in m.path.parent.glob("*.damaged-*"):
            p.unlink()
        try:
            s = m.open()
        except StoreError as exc:
            assert "damaged" in str(exc) or "not a pm4324" in str(exc), (pos, str(exc))
            continue
        m.assert_is_a_commit(s.restored)
        assert newest - RING < s.restored.seq <= newest
        recovered += 1
        s.close()
    assert recovered > 100  # most flips land in data a CRC or SQLite catches and routes around


def test_a_flip_in_the_newest_record_falls_back_to_the_one_before(m):
    newest = closed_with(m, 12)
    data = bytearray(m.path.read_bytes())
    payload = _payloads(m.path)[-1]
    assert Record.decode(payload).seq == newest
    pos = data.find(payload) + 200  # inside the energy registers
    data[pos] ^= 0x10
    m.path.write_bytes(bytes(data))
    s = m.open()
    assert s.restored.seq == newest - 1
    m.assert_is_a_commit(s.restored)
    assert "damaged" in s.notes[0][1]
    s.close()


def test_power_loss_tearing_the_last_wal_frame_gives_the_commit_before(m, tmp_path):
    """After a power cut the disk holds the db and a WAL whose last frame may be torn."""
    s = m.open()
    m.fill(s, 10)
    newest = s.last.seq
    crash = tmp_path / "crash"
    (crash / "var").mkdir(parents=True)
    for p in m.path.parent.iterdir():  # the files as they are on disk right now
        if p.name.startswith(m.path.name) and not p.name.endswith(".lock"):
            shutil.copy(p, crash / "var" / p.name)
    shutil.copy(m.id_path, crash / m.id_path.name)
    s.close()
    torn = Meterless(crash)
    torn.truth = m.truth
    wal = torn.path.with_name(torn.path.name + "-wal")
    assert wal.stat().st_size > 4096
    intact = wal.read_bytes()
    wal.write_bytes(intact[:-100])  # the last frame lost its tail
    r = torn.open()
    assert r.restored.seq == newest - 1
    torn.assert_is_a_commit(r.restored)
    r.close()


def test_interrupted_first_start_completes(m):
    """A first start killed after writing the identity but before the rename."""
    s = m.open()
    s.close()
    m.path.rename(m.path.with_name(m.path.name + ".creating"))
    s = m.open()
    assert s.restored.seq == 0
    s.close()
    m.id_path.unlink()  # killed before the identity was written: a first start again
    m.path.rename(m.path.with_name(m.path.name + ".creating"))
    s = m.open()
    assert s.notes[0][0] == "first_start"
    s.close()


def test_size_stays_bounded_and_events_are_pruned(m, monkeypatch):
    monkeypatch.setattr(store_mod, "MAX_EVENTS", 50)
    monkeypatch.setattr(store_mod, "PRUNE_EVERY", 10)
    s = m.open()
    m.fill(s, 300, events=True)
    s._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = m.path.stat().st_size
    m.fill(s, 1500, events=True)
    s._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert m.path.stat().st_size == size  # records updated in place, events pruned
    s.close()
    events = read_events(m.path)
    assert 50 <= len(events) < 60 and events[-1].text == "e1499"
    assert [e.text for e in read_events(m.path, last=2)] == ["e1498", "e1499"]


def test_reading_without_a_file_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no state file"):
        read_events(tmp_path / "nothing.db")
