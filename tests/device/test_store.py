"""The state store: exact restore, refusal of foreign or missing state, and damage recovery.

Every damaged-file test checks the one promise that matters: opening gives either a clear
StoreError or exactly the counters of a commit that was made (never zero, never a mix), and
one damaged byte costs at most one commit. The truth is kept here, per commit, as the test
saves it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest

from pm4324.device import store as store_mod
from pm4324.device.energy import EnergyRegisters
from pm4324.device.events import Event
from pm4324.device.record import SLOT
from pm4324.device.ring import SLOTS
from pm4324.device.store import Record, Store, StoreError, peek, read_events


class Meterless:
    """Saves N distinct commits and remembers each one's registers (the truth)."""

    def __init__(self, tmp: Path, name: str = "m"):
        self.path, self.id_path = tmp / "var" / f"{name}.state.db", tmp / f"{name}.meter-id"
        self.ring = self.path.with_suffix(".ring")
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

    def clear_aside(self) -> None:
        for p in self.path.parent.glob("*.damaged-*"):
            p.unlink()


@pytest.fixture
def m(tmp_path) -> Meterless:
    return Meterless(tmp_path)


def closed_with(m: Meterless, n: int = 20, events: bool = False) -> int:
    s = m.open()
    m.fill(s, n, events)
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


def test_the_ring_is_preallocated_and_written_in_place(m):
    s = m.open()
    inode = m.ring.stat().st_ino
    m.fill(s, 3 * SLOTS)
    s.close()
    assert m.ring.stat().st_size == SLOTS * SLOT and m.ring.stat().st_ino == inode


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


def test_a_second_meter_through_a_symlink_is_refused(m, tmp_path):
    """The issue's case: a symlinked store path plus a copied .meter-id."""
    s = m.open()
    m.fill(s, 3)
    (tmp_path / "other").mkdir()
    link = tmp_path / "other" / "link.state.db"
    link.symlink_to(m.path)
    shutil.copy(m.id_path, tmp_path / "other" / "b.meter-id")
    with pytest.raises(StoreError, match="in use by another running meter"):
        Store.open(link, tmp_path / "other" / "b.meter-id")
    (tmp_path / "dirlink").symlink_to(m.path.parent)  # a symlinked directory, too
    with pytest.raises(StoreError, match="in use"):
        Store.open(tmp_path / "dirlink" / m.path.name, m.id_path)
    s.close()


def test_a_second_meter_through_hard_links_is_refused(m, tmp_path):
    """A hard link has another name and no symlink to resolve: the lock is on the inode."""
    s = m.open()
    other = tmp_path / "other"
    other.mkdir()
    os.link(m.path, other / "h.state.db")
    os.link(m.ring, other / "h.state.ring")
    with pytest.raises(StoreError, match="in use by another running meter"):
        Store.open(other / "h.state.db", m.id_path)
    s.close()


def test_missing_state_of_a_meter_that_ran_is_an_error_not_a_reset(m):
    closed_with(m)
    m.path.unlink()
    m.ring.unlink()
    with pytest.raises(StoreError, match="missing, but this meter has run before.*--reset-store"):
        m.open()
    s = m.open(reset=True)
    assert s.notes[0][0] == "store_reset" and s.restored.ct.values().sum() == 0
    s.close()


def test_reset_keeps_the_old_files(m):
    newest = closed_with(m)
    s = m.open(reset=True)
    s.close()
    kept = [p for p in m.path.parent.iterdir() if ".reset-" in p.name]
    assert {p.name.split(".reset-")[0] for p in kept} == {m.path.name, m.ring.name}
    ring = next(p for p in kept if p.name.startswith(m.ring.name))
    assert max(r.seq for r in _ring_records(ring)) == newest


def _ring_records(path: Path) -> list[Record]:
    from pm4324.device.ring import read_ring

    return read_ring(path).records


def test_identity_missing_is_refused(m):
    closed_with(m)
    m.id_path.unlink()
    with pytest.raises(StoreError, match="identity .* is missing"):
        m.open()


def test_an_identity_that_is_no_uuid_is_refused(m):
    closed_with(m)
    m.id_path.write_text("not-a-uuid\n")
    with pytest.raises(StoreError, match=r"is not a meter identity \(a UUID\): 'not-a-uuid'"):
        m.open()


def test_another_meters_files_are_refused(tmp_path, m):
    closed_with(m)
    other = Meterless(tmp_path, "other")
    closed_with(other)
    shutil.copy(other.ring, m.ring)
    with pytest.raises(StoreError, match=f"{m.ring}.*another meter"):
        m.open()


def test_another_format_version_is_refused(m):
    closed_with(m)
    data = bytearray(m.ring.read_bytes())
    for k in range(SLOTS):  # version field of every record: a file of a future meter
        if data[k * SLOT : k * SLOT + 4] == b"PM4S":
            data[k * SLOT + 4 : k * SLOT + 6] = struct.pack("<H", 2)
    m.ring.write_bytes(bytes(data))
    m.path.unlink()  # (its backup copies are of version 1)
    with pytest.raises(StoreError, match="format version 2; this meter reads version 1"):
        m.open()


def test_a_flipped_meta_field_is_named_and_the_records_are_used(m):
    """The issue's misleading refusals: one bit in the meta meter id or format version."""
    newest = closed_with(m)
    for key, value in (("meter_id", None), ("format_version", "0")):
        con = sqlite3.connect(m.path)
        if value is None:
            value = con.execute("SELECT value FROM meta WHERE key='meter_id'").fetchone()[0]
            value = ("1" if value[0] != "1" else "2") + value[1:]
        con.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
        con.commit()
        con.close()
        s = m.open()
        text = " ".join(t for _, t in s.notes)
        assert "meta table" in text and ".damaged-" in text, text
        assert s.restored.seq == newest
        s.close()


def test_not_a_state_file_is_kept_aside_and_the_ring_used(m):
    newest = closed_with(m)
    m.path.unlink()
    con = sqlite3.connect(m.path)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    s = m.open()
    assert s.restored.seq == newest
    assert any("not a pm4324 state file" in t for _, t in s.notes)
    s.close()


def test_no_intact_record_anywhere_is_refused_naming_both_files(m):
    closed_with(m)
    m.path.write_bytes(b"")
    m.ring.write_bytes(b"\0" * 100 + b"garbage" * 500)
    with pytest.raises(StoreError) as err:
        m.open()
    text = str(err.value)
    assert str(m.ring) in text and str(m.path) in text and "empty" in text
    assert "--reset-store" in text
    assert m.path.read_bytes() == b""  # left as it is


def test_every_bit_flip_in_the_ring_costs_at_most_one_commit(m, tmp_path):
    """A bit flipped in each slot (header, registers, CRC) of a meter that crashed (no
    clean-stop backup): the newest intact commit, at most one commit back."""
    s = m.open()
    m.fill(s, 40)
    newest = s.last.seq
    crash = crashed_copy(m, s, tmp_path / "crash")
    s.close()
    files = Files(crash.path.parent)
    for slot in range(SLOTS):
        for offset in (2, 40, 1000, 3600):
            files.restore()
            data = bytearray(crash.ring.read_bytes())
            data[slot * SLOT + offset] ^= 0x10
            crash.ring.write_bytes(bytes(data))
            st = crash.open()
            r = st.restored
            crash.assert_is_a_commit(r)
            assert r.seq == (newest - 1 if slot == newest % SLOTS else newest), (slot, offset)
            text = " ".join(t for _, t in st.notes)
            assert f"slot(s) {slot} fail" in text and ".damaged-" in text
            st.close()


def test_a_clean_stop_backs_the_last_record_up_in_the_event_log(m):
    newest = closed_with(m, 20)
    data = bytearray(m.ring.read_bytes())
    data[(newest % SLOTS) * SLOT + 500] ^= 1
    m.ring.write_bytes(bytes(data))
    s = m.open()
    assert s.restored.seq == newest and str(m.path) in s.notes[-1][1]
    s.close()


class Files:
    """The files of a directory as they are now; ``restore`` puts exactly them back."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.saved = {p.name: p.read_bytes() for p in directory.iterdir()}

    def restore(self) -> None:
        for p in self.directory.iterdir():
            if p.name not in self.saved:
                p.unlink()
        for name, data in self.saved.items():
            (self.directory / name).write_bytes(data)


def test_truncated_ring_keeps_the_newest_intact_commit(m, tmp_path):
    """Cut at every 512 bytes, after a crash (no clean-stop backup in the event log): the
    newest record in the slots that remain whole; none left is a refusal, never zero."""
    s = m.open()
    m.fill(s, 30)
    crash = crashed_copy(m, s, tmp_path / "crash")
    s.close()
    files = Files(crash.path.parent)
    whole = crash.ring.read_bytes()
    for cut in range(0, len(whole), 512):
        files.restore()
        crash.ring.write_bytes(whole[:cut])
        intact = [x.seq for x in _records_in(whole[: cut - cut % SLOT])]
        if not intact:  # only the empty record of the first start is left: not a restore
            with pytest.raises(StoreError, match="no intact record.*--reset-store"):
                crash.open()
            continue
        st = crash.open()
        r = st.restored
        assert r.seq == max(intact), cut
        crash.assert_is_a_commit(r)
        assert st.notes and st.notes[-1][0] == "store_recovered"
        st.close()


def _records_in(data: bytes) -> list[Record]:
    from pm4324.device.record import scan

    return [x for x in scan(data) if isinstance(x, Record)]


def test_truncated_or_flipped_event_log_never_touches_the_counters(m):
    newest = closed_with(m, 30, events=True)
    whole = m.path.read_bytes()
    for cut in range(0, len(whole), 2048):
        m.path.write_bytes(whole[:cut])
        m.clear_aside()
        s = m.open()
        assert s.restored.seq == newest
        m.assert_is_a_commit(s.restored)
        s.close()
        m.path.write_bytes(whole)
    for pos in range(100, len(whole), 997):
        data = bytearray(whole)
        data[pos] ^= 0x04
        m.path.write_bytes(bytes(data))
        m.clear_aside()
        s = m.open()
        assert s.restored.seq == newest
        s.close()
        m.path.write_bytes(whole)


def crashed_copy(m: Meterless, s: Store, tmp: Path) -> Meterless:
    """The files as they are on disk right now (as a power cut would leave them)."""
    crash = Meterless(tmp)
    (tmp / "var").mkdir(parents=True)
    for p in m.path.parent.iterdir():
        if p.name.startswith(m.path.stem.split(".")[0]) and not p.name.endswith(".lock"):
            shutil.copy(p, tmp / "var" / p.name)
    shutil.copy(m.id_path, tmp / m.id_path.name)
    crash.truth = m.truth
    return crash


def test_every_wal_frame_flip_keeps_the_counters_and_says_so(m, tmp_path):
    """The issue's case: a bit flipped in any WAL frame (and the WAL header) lost 66
    published seconds without a word. The counters are in the ring now; SQLite drops the
    frames from a bad one on, so the WAL is kept aside and the loss of events is said."""
    s = m.open()
    m.fill(s, 12, events=True)  # one event-log commit per second: WAL frames
    newest = s.last.seq
    crash = crashed_copy(m, s, tmp_path / "crash")
    s.close()
    wal = crash.path.with_name(crash.path.name + "-wal")
    intact_wal, intact_db = wal.read_bytes(), crash.path.read_bytes()
    frame = 24 + 4096
    frames = (len(intact_wal) - 32) // frame
    assert frames >= 12
    for k in [-1, *range(frames)]:
        data = bytearray(intact_wal)
        data[10 if k < 0 else 32 + k * frame + 1000] ^= 0x02
        wal.write_bytes(bytes(data))
        crash.path.write_bytes(intact_db)
        crash.clear_aside()
        st = crash.open()
        assert st.restored.seq == newest, k
        crash.assert_is_a_commit(st.restored)
        text = " ".join(t for _, t in st.notes)
        if k < frames - 1:  # the last frame is indistinguishable from a torn write
            assert "WAL" in text and ".damaged-" in text, (k, text)
            kept = list(crash.path.parent.glob("*-wal.damaged-*"))
            assert kept and kept[0].read_bytes() == bytes(data)
        st.close()


@pytest.mark.parametrize("damage", ["deleted", "truncated", "zeroed", "garbage"])
def test_a_lost_or_garbled_wal_never_touches_the_counters(m, tmp_path, damage):
    s = m.open()
    m.fill(s, 12, events=True)
    newest = s.last.seq
    crash = crashed_copy(m, s, tmp_path / "crash")
    s.close()
    wal = crash.path.with_name(crash.path.name + "-wal")
    data = wal.read_bytes()
    if damage == "deleted":
        wal.unlink()
    else:
        wal.write_bytes({"truncated": data[: len(data) // 2], "zeroed": bytes(len(data)),
                         "garbage": bytes(range(256)) * (len(data) // 256)}[damage])
    st = crash.open()
    assert st.restored.seq == newest
    crash.assert_is_a_commit(st.restored)
    if damage in ("zeroed", "garbage"):  # SQLite would ignore it without a word
        assert any("WAL header" in t for _, t in st.notes)
    st.close()


def test_power_loss_tearing_the_last_ring_page_gives_the_commit_before(m, tmp_path):
    s = m.open()
    m.fill(s, 10)
    newest = s.last.seq
    crash = crashed_copy(m, s, tmp_path / "crash")
    s.close()
    data = bytearray(crash.ring.read_bytes())
    at = (newest % SLOTS) * SLOT
    data[at + 2048 : at + SLOT] = bytes(SLOT - 2048)  # only the first half reached the disk
    crash.ring.write_bytes(bytes(data))
    r = crash.open()
    assert r.restored.seq == newest - 1
    crash.assert_is_a_commit(r.restored)
    r.close()


def test_a_crash_between_event_log_and_ring_keeps_event_and_state_together(m, tmp_path):
    """The event log's commit carries its record: a crash after it and before the ring
    write restores that record, so the log never tells of a change the state does not
    show (and events whose record is lost everywhere are dropped with a note)."""
    s = m.open()
    m.fill(s, 5)
    crash = crashed_copy(m, s, tmp_path / "crash")  # the ring as it was before the next save
    ct, meter = s.last.ct, s.last.meter
    ct.reset()
    s.save(5, ct, meter, (True, True), {}, [Event(1.0, s.boot, 5, "energy_reset", "all")])
    for side in ("", "-wal", "-shm"):
        src = m.path.with_name(m.path.name + side)
        if src.exists():
            shutil.copy(src, crash.path.with_name(crash.path.name + side))
    s.close()
    r = crash.open()
    assert r.restored.seq == 6 and r.restored.ct.values().sum() == 0
    assert str(crash.path) in r.notes[-1][1]  # restored from the event log's copy
    assert read_events(crash.path)[-1].kind == "energy_reset"
    r.close()


def test_old_format_files_move_to_the_ring(m):
    """A state file of format 1 (records in SQLite only) is read and its records moved."""
    s = m.open()
    m.fill(s, 6)
    newest = s.last.seq
    s.close()
    m.ring.unlink()
    con = sqlite3.connect(m.path)
    con.execute("UPDATE meta SET value = '1' WHERE key = 'format_version'")
    con.commit()
    con.close()
    s = m.open()
    assert s.restored.seq == newest and m.ring.stat().st_size == SLOTS * SLOT
    assert "format 1" in s.notes[0][1]
    s.close()


def test_interrupted_first_start_completes(m):
    """A first start killed after writing the identity but before the renames."""
    s = m.open()
    s.close()
    for p in (m.path, m.ring):
        p.rename(p.with_name(p.name + ".creating"))
    s = m.open()
    assert s.restored.seq == 0
    s.close()
    m.id_path.unlink()  # killed before the identity was written: a first start again
    for p in (m.path, m.ring):
        p.rename(p.with_name(p.name + ".creating"))
    s = m.open()
    assert s.notes[0][0] == "first_start"
    s.close()


def test_the_event_log_is_bounded_whatever_the_boot_pattern(m, monkeypatch):
    """A crash-looping meter logs a few events per boot: it is pruned all the same."""
    monkeypatch.setattr(store_mod, "MAX_EVENTS", 50)
    for boot in range(40):
        s = m.open()
        m.fill(s, 3, events=True)
        s.close()
        if boot == 20:
            size = m.path.stat().st_size
    events = read_events(m.path)
    assert len(events) <= 50 + 3 and events[-1].text == "e2"
    assert m.path.stat().st_size <= size


def test_size_stays_bounded_and_events_are_pruned(m, monkeypatch):
    monkeypatch.setattr(store_mod, "MAX_EVENTS", 50)
    monkeypatch.setattr(store_mod, "PRUNE_EVERY", 10)
    s = m.open()
    m.fill(s, 300, events=True)
    s.close()
    size = m.path.stat().st_size
    s = m.open()
    m.fill(s, 1500, events=True)
    s.close()
    assert m.path.stat().st_size <= size  # events pruned, records in place
    events = read_events(m.path)
    assert 50 <= len(events) < 60 and events[-1].text == "e1499"
    assert [e.text for e in read_events(m.path, last=2)] == ["e1498", "e1499"]


def test_reading_without_a_file_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no state file"):
        read_events(tmp_path / "nothing.db")


def _written() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise AssertionError("no write_bytes in /proc/self/io")


def test_a_second_costs_about_one_page_of_disk_writes(m):
    """Flash wear (the issue: 8-13 KB per second): a commit without events writes its one
    4 KiB page, counted by the kernel (/proc/self/io), whatever the page cache holds."""
    if not Path("/proc/self/io").exists():
        pytest.skip("no /proc/self/io on this system")
    s = m.open()
    m.fill(s, 20)
    before = _written()
    m.fill(s, 200)
    per_commit = (_written() - before) / 200
    s.close()
    assert per_commit <= 5 * 1024, per_commit
