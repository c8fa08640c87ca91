"""Opening the state files: first start, identity, and recovery from damage.

The rules (docs/energy-store.md): the newest intact record of this meter in either file
wins; a damaged file is renamed aside (``.damaged-<time>``) and rebuilt from that record,
never a healthy one; every repair is said as a note (logged as a ``store_recovered``
event); records of another meter or format version are refused by name; a missing state
with an existing identity is an error; only ``--reset-store`` starts from zero.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pm4324.config.settings_file import fsync_directory, write_atomic
from pm4324.device import eventlog
from pm4324.device.eventlog import Damaged
from pm4324.device.record import FORMAT_VERSION, SLOT, Record, scan
from pm4324.device.ring import SLOTS, read_ring, ring_path, write_new_ring

Notes = list[tuple[str, str]]


class StoreError(Exception):
    """The state store cannot be used; the message says why and what to do."""


def read_identity(id_path: Path, owner: str) -> uuid.UUID | None:
    """The identity (a UUID) kept in ``id_path``; None when the file does not exist.

    ``owner`` ("meter", "fleet") names whose identity it is in the StoreError of an
    unreadable file or of one that holds no UUID."""
    try:
        text = id_path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read the {owner} identity {id_path}: {exc.strerror}") from None
    try:
        return uuid.UUID(text)
    except ValueError:
        raise StoreError(f"{id_path} is not a {owner} identity (a UUID): {text[:40]!r}") from None


def _read_id(id_path: Path) -> str | None:
    found = read_identity(id_path, "meter")
    return None if found is None else str(found)


def _move_aside(paths: Sequence[Path], tag: str) -> list[Path]:
    """Rename files out of the way (kept for inspection); the new names."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for src in paths:
        if src.exists():
            dst = src.with_name(f"{src.name}.{tag}-{stamp}")
            os.replace(src, dst)
            moved.append(dst)
    if moved:
        fsync_directory(moved[0].parent)
    return moved


def space_hint(directory: Path) -> str:
    """"; the filesystem is full ..." when it nearly is (SQLite then says "disk I/O error")."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return ""
    return f"; the filesystem holding it is full ({free} bytes free)" if free < 1 << 20 else ""


def _copy_aside(path: Path) -> Path:
    """A copy of a damaged file that is going to be written over, kept as evidence."""
    dst = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.copy2(path, dst)
    return dst


def _all_files(path: Path) -> list[Path]:
    return [path, *eventlog.sidecars(path), ring_path(path)]


def _creating(path: Path) -> Path:
    return path.with_name(path.name + ".creating")


def _install(path: Path, record: Record, *, ring: bool = True, db: bool = True) -> None:
    """Write the ring and/or the event log of ``record`` aside, then rename into place."""
    if ring:
        tmp = _creating(ring_path(path))
        write_new_ring(tmp, record)
        os.replace(tmp, ring_path(path))
    if db:
        tmp = _creating(path)
        eventlog.build(tmp, record)
        os.replace(tmp, path)
    fsync_directory(path.parent)


def _when(record: Record) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.time))


def _describe(record: Record) -> str:
    return (f"commit {record.seq} (boot {record.boot}, second {record.second}, saved "
            f"{_when(record)})")


@dataclass
class _Found:
    """The intact records of every source, and what is wrong with each source."""

    ring: list[Record] = field(default_factory=list)
    db: list[Record] = field(default_factory=list)
    ring_damage: str = ""  # "" = whole, or what is wrong
    db_damage: str = ""
    db_format: str = ""
    wal_damage: str = ""
    kept: list[Path] = field(default_factory=list)  # copies of damaged files kept as evidence
    foreign: dict[str, Path] = field(default_factory=dict)  # other meter id -> file
    versions: dict[int, Path] = field(default_factory=dict)


def _look(path: Path, meter_id: str) -> _Found:
    """Read both files (those that exist); never changes anything."""
    found, ring = _Found(), ring_path(path)
    if ring.exists():
        try:
            scan_ = read_ring(ring)
        except OSError as exc:
            raise StoreError(f"cannot read {ring}: {exc.strerror}") from None
        found.ring = scan_.records
        found.versions.update({v: ring for v in scan_.versions})
        if scan_.damaged:
            found.ring_damage = f"slot(s) {', '.join(map(str, scan_.damaged))} fail their CRC"
        elif scan_.size != SLOTS * SLOT:
            found.ring_damage = f"{scan_.size} bytes instead of {SLOTS * SLOT}"
    if path.exists():
        wal = eventlog.sidecars(path)[0]
        found.wal_damage = eventlog.wal_damage(wal)
        if found.wal_damage:  # keep the evidence before SQLite opens (and resets) it
            found.kept.append(_copy_aside(wal))
            found.db += _salvage([wal], found)  # records in frames SQLite will ignore
        try:
            meta, db_records, bad = eventlog.check(path)
            found.db += db_records
        except Damaged as why:
            found.db_damage = str(why)
            found.db += _salvage([path, *eventlog.sidecars(path)], found)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {path}: {exc}{space_hint(path.parent)} (the file is "
                             "left as it is)") from None
        else:
            found.db_format = meta.get("format_version", "")
            if meta.get("meter_id") != meter_id and found.db and all(
                    r.meter_id == meter_id for r in found.db + found.ring):
                found.db_damage = (f"its meta table names meter {meta.get('meter_id')!r} but "
                                   "every record is this meter's")
            elif found.db_format not in ("1", str(eventlog.DB_FORMAT)) and found.db:
                found.db_damage = f"its meta table says format {found.db_format!r}"
            elif bad and not found.db:
                found.db_damage = f"all {bad} backup records fail their CRC"
    for source, records in ((ring, found.ring), (path, found.db)):
        for r in records:
            if r.meter_id != meter_id:
                found.foreign.setdefault(r.meter_id, source)
    return found


def _salvage(paths: list[Path], found: _Found) -> list[Record]:
    """Every intact record found byte by byte in files SQLite cannot read."""
    out = []
    for p in paths:
        try:
            data = p.read_bytes()
        except OSError:
            continue
        for item in scan(data):
            if isinstance(item, Record):
                out.append(item)
            else:
                found.versions.setdefault(item.version, p)
    return out


def open_state(path: Path, id_path: Path, reset: bool
                ) -> tuple[Record, list[tuple[str, str]], bool]:
    """(record to start from, notes, keep events of later commits) after repairs."""
    meter_id = _read_id(id_path)
    ring = ring_path(path)
    if reset:
        meter_id = meter_id or str(uuid.uuid4())
        moved = _move_aside(_all_files(path), "reset")
        first = Record(meter_id, 0, 0, -1, time.time())
        _install(path, first)
        write_atomic(id_path, meter_id + "\n")
        kept = f"the old files are kept as {', '.join(map(str, moved))}" if moved else \
            "there was none"
        return first, [("store_reset", f"new state file {path} on request (--reset-store); "
                        f"{kept}")], False
    if not path.exists() and not ring.exists():
        return _first_start(path, id_path, meter_id)
    if meter_id is None:
        raise StoreError(
            f"{path} exists but the meter identity {id_path} is missing: copy the .meter-id file "
            "that belongs to this state file there, or start a new state file with --reset-store")
    found = _look(path, meter_id)
    return _decide(path, meter_id, found)


def _first_start(path: Path, id_path: Path, meter_id: str | None
                 ) -> tuple[Record, list[tuple[str, str]], bool]:
    creating = _creating(path)
    if meter_id is None:  # first start (a leftover .creating is from one that crashed)
        meter_id = str(uuid.uuid4())
        first = Record(meter_id, 0, 0, -1, time.time())
        write_new_ring(_creating(ring_path(path)), first)
        eventlog.build(creating, first)  # identity only once both files are whole:
        write_atomic(id_path, meter_id + "\n")  # a crash anywhere here is recoverable
        os.replace(_creating(ring_path(path)), ring_path(path))
        os.replace(creating, path)
        fsync_directory(path.parent)
        return first, [("first_start", f"new state files {path} and {ring_path(path)}; meter id "
                        f"{meter_id} written to {id_path}")], False
    if creating.exists() and _creating(ring_path(path)).exists():
        found = _look(creating, meter_id)
        if found.db and all(r.meter_id == meter_id for r in found.db):
            os.replace(_creating(ring_path(path)), ring_path(path))  # the first start crashed
            os.replace(creating, path)  # between identity and rename
            fsync_directory(path.parent)
            return found.db[0], [], False
    raise StoreError(
        f"{path} and {ring_path(path)} are missing, but this meter has run before (its identity "
        f"{id_path} exists): its energy counters are in those files. Restore them (or mount the "
        "disk they are on), or start from zero with --reset-store")


def _decide(path: Path, meter_id: str, found: _Found
            ) -> tuple[Record, list[tuple[str, str]], bool]:
    ring = ring_path(path)
    if found.foreign:
        other, where = next(iter(found.foreign.items()))
        raise StoreError(f"{where} holds records of another meter ({other}), not of this one "
                         f"({meter_id}): a state file copied from another meter, or two settings "
                         "files sharing one store")
    mine = found.ring + found.db
    if not mine and found.versions:
        version, where = next(iter(found.versions.items()))
        raise StoreError(f"{where} was written in format version {version}; this meter reads "
                         f"version {FORMAT_VERSION}")
    if not found.ring and all(r.seq == 0 for r in mine):
        mine = []  # only the first start's empty record survives: that would be a reset
    if not mine:
        what = "; ".join(f"{p}: {why}" for p, why in (
            (ring, found.ring_damage or ("missing" if not ring.exists() else "no intact record")),
            (path, found.db_damage or ("missing" if not path.exists() else "no intact record"))))
        raise StoreError(f"no intact record of this meter in its state files ({what}). They are "
                         "left as they are; start from zero with --reset-store (they are then "
                         "kept aside)")
    best = max(mine, key=lambda r: r.seq)
    source = ring if any(r is best for r in found.ring) else path
    notes: Notes = []
    moved = list(found.kept)
    if found.wal_damage:
        wal = eventlog.sidecars(path)[0]
        notes.append(("store_recovered", f"{wal}: {found.wal_damage} (events of those frames "
                      f"may be missing from the log); a copy is kept as {found.kept[0]}"))
    ring_ok = ring.exists() and not found.ring_damage
    db_ok = path.exists() and not found.db_damage
    try:
        if not ring_ok:
            why = found.ring_damage or "missing"
            if found.db_format == "1" and not ring.exists():
                notes.append(("store_recovered", f"{path}: moved the per-second records from "
                              f"SQLite (format 1) to the ring file {ring}"))
            else:
                moved += _move_aside([ring], "damaged")
                notes.append(("store_recovered", f"{ring}: {why}"))
            _install(path, best, db=False)
        if not db_ok:
            why = found.db_damage or "missing"
            moved += _move_aside([path, *eventlog.sidecars(path)], "damaged")
            notes.append(("store_recovered", f"{path}: {why}; a new event log was started "
                          "(events before this power-up are in the file kept aside)"
                          if moved else f"{path}: {why}; a new event log was started"))
            _install(path, best, ring=False)
    except OSError as exc:
        kept = f"; kept aside: {', '.join(map(str, moved))}" if moved else ""
        raise StoreError(f"cannot repair the state files in {path.parent}: {exc.strerror}"
                         f"{space_hint(path.parent)}{kept}") from None
    newest_ring = max((r.seq for r in found.ring), default=-1)
    if notes or source != ring or newest_ring < best.seq:
        kept = f"; damaged files kept as {', '.join(map(str, moved))}" if moved else ""
        notes.append(("store_recovered", f"restored {_describe(best)} from {source}{kept}"))
    return best, notes, bool(found.ring_damage)
