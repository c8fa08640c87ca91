"""The state store: energy registers, relay states and alarm latches that survive a crash,
a power cut, a damaged byte, a full disk or a second writer, plus the event log.

Two files per meter (docs/energy-store.md):

* ``NAME.state.ring`` (device/ring.py): the per-second record, one 4 KiB page written in
  place with ``fdatasync`` into a preallocated ring of slots. About one page per commit,
  the floor for a commit every second; a full disk cannot stop it.
* ``NAME.state.db`` (device/eventlog.py): SQLite with the event log, the meter id and a
  backup copy of the record, written only when there is an event to log and at a stop.

**Every record is self-describing** (device/record.py): magic, format version, meter id,
a commit number that never repeats, and a CRC-32. Opening takes the newest intact record
of this meter found in either file; anything damaged is renamed aside
(``.damaged-<time>``, never deleted and never a healthy file), and what was recovered from
where is said on stderr and logged as a ``store_recovered`` event. Only when no intact
record of this meter exists anywhere does opening fail; starting from zero then takes an
explicit ``--reset-store``.

**Identity.** On first start a meter id (a UUID) is written beside the settings file
(``<settings stem>.meter-id``). Records of another meter, or of another format version,
are refused by name. A missing state with an existing identity is an error, not a reset.

**One writer.** The store path is resolved (symlinks) and both files are locked with
``flock`` on their open descriptors, i.e. by inode: a second meter reaching them by any
path (a symlink, a hard link, a bind mount) is refused.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pm4324.config.settings import Settings
from pm4324.device import eventlog
from pm4324.device.energy import EnergyRegisters
from pm4324.device.eventlog import Damaged, EventLog
from pm4324.device.events import MAX_EVENTS, Event
from pm4324.device.record import Record, copy_registers
from pm4324.device.recovery import StoreError, open_state, space_hint
from pm4324.device.ring import SLOTS, Ring, RingInUse, read_ring, ring_path

__all__ = ["RING", "EventsNotSaved", "Record", "Store", "StoreError", "peek", "read_events",
           "store_location"]

RING = SLOTS
PRUNE_EVERY = 100  # events inserted between two prunes of the oldest ones


class EventsNotSaved(StoreError):
    """The record was saved, the events were not (they stay pending and are retried)."""


def store_location(settings: Settings, settings_path: str | None) -> tuple[Path, Path]:
    """(state file, identity file) of a meter run with these settings.

    A settings file ``DIR/NAME.toml`` gives ``DIR/var/NAME.state.db`` and
    ``DIR/NAME.meter-id``; the built-in building (no settings file) uses
    ``$XDG_STATE_HOME/pm4324/`` (default ``~/.local/state/pm4324/``). ``[store] path``
    overrides the state file, relative to the settings file's directory. The ring file is
    the state file with the suffix ``.ring``.
    """
    if settings_path:
        base = Path(settings_path).resolve()
        home, stem = base.parent, base.stem
        id_path, default = home / f"{stem}.meter-id", home / "var" / f"{stem}.state.db"
    else:
        home = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "pm4324"
        id_path, default = home / "meter-id", home / "state.db"
    if not settings.store.path:
        return default, id_path
    path = Path(settings.store.path).expanduser()
    return (path if path.is_absolute() else home / path), id_path


class Store:
    """An open state store, locked against a second meter. ``save`` is thread-safe."""

    def __init__(self, path: Path, ring: Ring, log: EventLog, locks: list[int], last: Record,
                 notes: list[tuple[str, str]], power_up: bool):
        self.path = path
        self.ring_path = ring.path
        self._ring = ring
        self._log = log
        self._locks = locks
        self.restored = last  # what the meter starts from
        self.last = last
        self.boot = last.boot + power_up  # records written now carry this boot number
        self.notes = notes  # (event kind, text) of what opening found or did
        self._lock = threading.Lock()
        self._logged: tuple[int, int] = (-1, 0)  # (commit, how many pending events) in the log

    @classmethod
    def open(cls, path: Path, id_path: Path, *, reset: bool = False, power_up: bool = True
             ) -> Store:
        """Open (or create, on first start) the state files; StoreError says why not.

        ``power_up`` False: a tool (reset-energy) that is not a start of the meter.
        """
        path = Path(path).expanduser().resolve()
        locks = [_lock(path.with_name(path.name + ".lock"), path, create=True)]
        ring = log = None
        try:
            last, notes, keep_events = open_state(path, Path(id_path), reset)
            locks.append(_lock(path, path))  # by inode: a hard link or bind mount too
            ring = Ring.open(ring_path(path))  # locks the ring by inode
            log = EventLog(path, MAX_EVENTS, PRUNE_EVERY)
            dropped = 0 if keep_events else log.drop_after(last.seq)
            log.prune()
        except RingInUse:
            _release(locks, ring, log)
            raise StoreError(f"{path} is in use by another running meter") from None
        except OSError as exc:
            _release(locks, ring, log)
            raise StoreError(f"cannot write {exc.filename or path}: {exc.strerror}"
                             f"{space_hint(path.parent)}") from None
        except sqlite3.Error as exc:
            _release(locks, ring, log)
            raise StoreError(f"cannot open {path}: {exc}{space_hint(path.parent)}") from None
        except BaseException:
            _release(locks, ring, log)
            raise
        if dropped:
            notes.append(("store_recovered", f"{dropped} event(s) logged after commit "
                          f"{last.seq} were dropped: the meter stopped before their state "
                          "was saved (nothing that was acknowledged)"))
        return cls(path, ring, log, locks, last, notes, power_up)

    def save(self, second: int, ct: EnergyRegisters, meter: EnergyRegisters,
             relays: tuple[bool, bool], latched: dict[int, int], events: Sequence[Event] = ()
             ) -> Record:
        """Commit one record (and events) durably; StoreError if the disk refuses.

        Events go to the log first, marked with the record's commit number, then the
        record to the ring. EventsNotSaved: the record is saved, the events are not.
        """
        with self._lock:
            record = Record(self.last.meter_id, self.last.seq + 1, self.boot, second,
                            time.time(), copy_registers(ct), copy_registers(meter),
                            (bool(relays[0]), bool(relays[1])), dict(latched))
            done_seq, done_n = self._logged
            fresh = list(events[done_n:] if done_seq == record.seq else events)
            log_error = None
            if fresh:
                try:
                    self._log.commit(fresh, record)
                    self._logged = (record.seq, len(events))
                except sqlite3.Error as exc:
                    log_error = exc
            try:
                self._ring.write(record)
            except OSError as exc:
                raise StoreError(f"{self.ring_path}: cannot save the state: "
                                 f"{exc.strerror or exc}") from None
            self.last = record
            self._logged = (-1, 0)
            if log_error is not None:
                raise EventsNotSaved(f"{self.path}: energies saved, but the event log cannot "
                                     f"be written: {log_error}")
            return record

    def close(self) -> None:
        """Back the last record up into the event log (best effort) and release the files."""
        with self._lock:
            try:
                self._log.commit([], self.last)
            except sqlite3.Error:
                pass  # the ring holds it; the backup is only a second copy
            _release(self._locks, self._ring, self._log)


def _lock(lock_path: Path, path: Path, create: bool = False) -> int:
    """flock ``lock_path`` (by inode); StoreError if another meter holds it."""
    try:
        if create:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except OSError as exc:
        raise StoreError(f"cannot use {lock_path} for the state: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreError(f"{path} is in use by another running meter") from None
    return fd


def _release(locks: list[int], ring: Ring | None, log: EventLog | None) -> None:
    if log is not None:
        log.close()
    if ring is not None:
        ring.close()
    for fd in reversed(locks):
        os.close(fd)


def peek(path: Path) -> Record | None:
    """The newest intact record in a meter's state files (without locking them)."""
    path = Path(path)
    records: list[Record] = []
    if ring_path(path).exists():
        records += read_ring(ring_path(path)).records
    if path.exists():
        try:
            records += eventlog.check(path)[1]
        except (Damaged, sqlite3.Error):
            pass
    return max(records, key=lambda r: r.seq, default=None)


def read_events(path: Path, last: int | None = None) -> list[Event]:
    """The event log, oldest first (the newest ``last`` only, when given)."""
    if not Path(path).is_file():
        raise StoreError(f"{path}: no state file (the meter has not run with these settings)")
    try:
        conn = eventlog.connect(Path(path))
        try:
            return eventlog.read_events(conn, last)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read the state file: {exc}") from None
