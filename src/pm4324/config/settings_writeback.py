"""Settings changed over Modbus or CANopen, written back into the operator's TOML file.

The file is the operator's, so it is edited in place (tomlkit), only at the keys that
changed: comments, order, key style (``ct_type_a = 200`` stays a CT type when the new ratio
is one) and the file's mode survive, and the previous file is kept as ``NAME.toml.bak``.

A human may have edited the file since the meter loaded it. That edit is never undone: a
write that changes a key the operator also changed is refused (``SettingsConflict``, before
the write is acknowledged, and logged as an event); any other write is merged by key into
the file as it is now (the operator's edits take effect at the next start).

The check reads the file before the write is acknowledged (a small file: ~1 ms); the save
itself (write, fsync, rename) runs in a thread of its own, so no protocol reply and no read
waits for the disk, and writes that arrive while a save runs share the next one.

Saves are paced: one starts at most every ``SAVE_GAP_S``, and the writes queued meanwhile
share it. Why: a save is pure-Python work (tomlkit edit and render, parsing the result),
3-11 ms of CPU and of the GIL per save; under a storm of writes, saving back to back took
45 % of the process's CPU and delayed every Modbus read (docs/benchmarks.md, "Modbus TCP
under attack"). A lone write is saved at once; ``flush`` skips the wait.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from pm4324.config.settings import CT_TYPES_A, Settings, SettingsError
from pm4324.config.settings_file import (
    Path_,
    flatten,
    settings_table,
    settings_to_toml,
    write_atomic,
)
from pm4324.config.settings_parse import parse_settings

log = logging.getLogger(__name__)

SAVE_GAP_S = 0.1  # a save starts at most this often (from the start of the previous one)
REMOVED = object()  # a key that goes back to its default (and out of the file)
Changes = dict[Path_, Any]


class SettingsConflict(SettingsError):
    """The operator edited the same key on disk, or the file on disk is not valid now."""


_flat_cache: list[tuple[Settings, dict[Path_, Any]]] = []  # the last few, by identity
_flat_lock = threading.Lock()


def _flat(s: Settings) -> dict[Path_, Any]:
    """``flatten(settings_table(s))``, remembered for the last few Settings objects: a
    write compares old with new twice (event text, file check), and the next write's old
    is this write's new (Settings are frozen, so one object's keys never change)."""
    with _flat_lock:
        for known, flat in _flat_cache:
            if known is s:
                return flat
    flat = flatten(settings_table(s))
    with _flat_lock:
        _flat_cache.insert(0, (s, flat))
        del _flat_cache[4:]
    return flat


def changes_between(old: Settings, new: Settings) -> Changes:
    """The keys whose value differs, with the new value (or REMOVED)."""
    a, b = _flat(old), _flat(new)
    return {p: b.get(p, REMOVED) for p in a.keys() | b.keys()
            if a.get(p, REMOVED) != b.get(p, REMOVED)}


def describe(changes: Changes) -> str:
    """"[meters.3] ct_ratio = 400; ..." for the event log ([alarms.N] counts from 1)."""
    parts = []
    for path in sorted(changes):
        section = list(path[:-1])
        if section[:1] == ["alarms"]:
            section[1] = str(int(section[1]) + 1)
        value = changes[path]
        text = "removed" if value is REMOVED else f"= {tomlkit.item(value).as_string()}"
        parts.append(f"[{'.'.join(section)}] {path[-1]} {text}".replace("[] ", ""))
    return "; ".join(parts) or "no change"


def _stamp(path: Path) -> tuple[int, int, int, int] | None:
    """What changes when anyone writes the file (None: it does not exist)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _disk_keys(text: str, source: str) -> dict[Path_, Any]:
    return flatten(settings_table(parse_settings(tomllib.loads(text), source)))


class SettingsWriter:
    """The write-back path of one settings file (one per running meter)."""

    def __init__(self, path: Path, loaded: Settings):
        self.path = Path(path)
        self._seen = _stamp(self.path)  # the file as we last read or wrote it
        self._text: str | None = None  # its text then (None: unknown, read it again)
        try:  # what the file says now is the base its later edits are found against
            text = self.path.read_text(encoding="utf-8")
            self._base = _disk_keys(text, str(self.path))
            self._text = text
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, SettingsError):
            self._base = flatten(settings_table(loaded))
        self._pending: Changes = {}  # queued, not yet being saved
        # being saved now: the file may show these already (renamed into place, not yet
        # recorded in ``_base``). Queued values may not: the next save writes them.
        self._saving: Changes = {}
        self._latest = loaded  # a deleted file is written anew, whole, from these
        self._busy = False
        self._hurry = 0  # callers of flush waiting: save now, not after SAVE_GAP_S
        self._closed = False
        self._news: list[str] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.saves = 0  # how many times the file was written (writes may share one)

    # -- the protocol side (must return in a few ms) ----------------------------------------

    def submit(self, old: Settings, new: Settings) -> str:
        """Check the file on disk, then queue the change; raises SettingsConflict. Returns
        a note for the event log when the write is merged into a file edited on disk."""
        changes = changes_between(old, new)
        if not changes:
            return ""
        with self._cond:
            # unchanged since we read or wrote it (the common case: one stat, no parse)
            untouched = self._seen is not None and _stamp(self.path) == self._seen
            disk = {} if untouched else self._read_disk()
            clash = self._clashes(changes, disk)
            if clash:
                p = clash[0]
                raise SettingsConflict(str(self.path), ".".join(p), changes[p],
                                       "this key was changed in the file since the meter loaded "
                                       "it; the operator's edit is kept and this write refused")
            edited = [] if untouched else sorted(
                p for p in disk.keys() | self._base.keys() if p not in changes
                and disk.get(p, REMOVED) not in (self._base.get(p, REMOVED),
                                                 self._saving.get(p, REMOVED)))
            self._pending.update(changes)
            self._latest = new
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="settings-writer",
                                                daemon=True)
                self._thread.start()
        if not edited:
            return ""
        keys = ", ".join(".".join(p) for p in edited[:3]) + (" ..." if len(edited) > 3 else "")
        return (f"merged into {self.path}, edited on disk since the meter loaded it ({keys}: "
                "kept, in effect at the next start)")

    def poll_news(self) -> list[str]:
        """Save failures and merges since the last call (for the event log)."""
        with self._cond:
            news, self._news = self._news, []
        return news

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued change is on disk (or failed); False on timeout."""
        with self._cond:
            self._hurry += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: not self._pending and not self._busy,
                                           timeout_s)
            finally:
                self._hurry -= 1

    def close(self, timeout_s: float = 10.0) -> None:
        self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # -- the writer thread ------------------------------------------------------------------

    def _read_disk(self) -> dict[Path_, Any]:
        try:
            return _disk_keys(self.path.read_text(encoding="utf-8"), str(self.path))
        except FileNotFoundError:
            return {}  # deleted: the write recreates it from the meter's settings
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, SettingsError) as exc:
            raise SettingsConflict(str(self.path), "(file)", str(self.path),
                                   f"was edited and cannot be used now ({exc}): fix it, then "
                                   "write again") from None

    def _clashes(self, changes: Changes, disk: dict[Path_, Any]) -> list[Path_]:
        """Keys the operator changed on disk to something else than ours: the file shows
        neither what we last read or wrote, nor what the save in progress writes, nor the
        value asked for now. (Not the latest queued value: while a save runs, the same key
        may take several values, and the file shows the one being saved.)"""
        if not disk:
            return []
        return sorted(p for p, value in changes.items()
                      if disk.get(p, REMOVED) not in (self._base.get(p, REMOVED),
                                                       self._saving.get(p, REMOVED), value))

    def _run(self) -> None:
        next_save = 0.0  # monotonic time before which no save starts (SAVE_GAP_S)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return
                # the pace: writes that come during the gap are saved together after it
                self._cond.wait_for(lambda: self._hurry or self._closed,
                                    next_save - time.monotonic())
                changes, self._pending = self._pending, {}
                self._saving = dict(changes)
                self._busy = True
            next_save = time.monotonic() + SAVE_GAP_S
            news, base, text = self._save(changes)
            with self._cond:
                if base is not None:
                    self._base = base
                    self._seen = _stamp(self.path)
                    self._text = text
                    self.saves += 1
                self._saving = {}
                if news:
                    log.warning("%s", news)
                    self._news.append(news)
                self._busy = False
                self._cond.notify_all()

    def _save(self, changes: Changes
              ) -> tuple[str | None, dict[Path_, Any] | None, str | None]:
        """Merge ``changes`` into the file as it is now; (a line for the log, the new base,
        the new text)."""
        try:
            with self._cond:  # untouched since we last wrote it: its text and keys are known
                known = self._seen is not None and _stamp(self.path) == self._seen
                text = self._text if known else None
            late: list[Path_] = []
            if text is None:
                try:
                    text = self.path.read_text(encoding="utf-8")
                except FileNotFoundError:
                    text = ""
                disk = _disk_keys(text, str(self.path)) if text else {}
                with self._cond:
                    late = self._clashes(changes, disk)  # edited between the check and now
            for p in late:
                del changes[p]
            with self._cond:
                latest = self._latest
            doc = tomlkit.parse(text or settings_to_toml(latest))
            for path, value in sorted(changes.items()):
                _apply(doc, path, value)
            removed = (p for p, v in changes.items() if v is REMOVED)
            for path in sorted(removed, key=_numeric_order, reverse=True):
                _drop_empty(doc, path)
            new_text = tomlkit.dumps(doc)
            if text:
                backup = self.path.with_name(self.path.name + ".bak")
                shutil.copy2(self.path, backup)
            write_atomic(self.path, new_text)
            base = _disk_keys(new_text, str(self.path))
        except (OSError, TOMLKitError, tomllib.TOMLDecodeError, SettingsError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return (f"settings not saved to {self.path}: {reason} (they apply until a restart)",
                    None, None)
        if late:
            return (f"settings file {self.path} was edited meanwhile at "
                    f"{', '.join('.'.join(p) for p in late)}: the operator's values kept"), \
                base, new_text
        return None, base, new_text


def _numeric_order(path: Path_) -> tuple:
    """Key paths with numbered parts in numeric order ("alarms", "10" after "alarms", "9")."""
    return tuple((0, int(k), "") if k.isdigit() else (1, 0, k) for k in path)


def _apply(doc: Any, path: Path_, value: Any) -> None:
    """Set one key in the document, creating its tables, keeping the file's key style."""
    container = doc
    for depth, key in enumerate(path[:-1]):
        if isinstance(container, list):  # [[alarms]]: an array of tables
            while len(container) <= int(key):
                container.append(tomlkit.table())
            container = container[int(key)]
            continue
        if key not in container:
            if value is REMOVED:
                return
            following = path[depth + 1]
            if key == "alarms":
                container[key] = tomlkit.aot()
            else:
                container[key] = tomlkit.table(is_super_table=following.isdigit() or None)
        container = container[key]
    key = path[-1]
    if key == "ct_ratio" and "ct_type_a" in container:
        if value is not REMOVED and float(value).is_integer() and int(value) in CT_TYPES_A:
            container["ct_type_a"] = int(value)
            return
        del container["ct_type_a"]
    if value is REMOVED:
        if key in container:
            del container[key]
    elif path[:2] == ("replay", "inputs"):
        inline = tomlkit.inline_table()
        inline.update(value)
        container[key] = inline
    else:
        container[key] = value


def _drop_empty(doc: Any, path: Path_) -> None:
    """Remove the tables along ``path`` that lost their last key (innermost first); a
    trailing [[alarms]] table that lost its keys goes too."""
    for depth in range(len(path) - 1, 0, -1):
        parent = doc
        for key in path[: depth - 1]:
            parent = parent[int(key)] if isinstance(parent, list) else parent.get(key)
            if parent is None:
                return
        key = path[depth - 1]
        if isinstance(parent, list):
            if int(key) == len(parent) - 1 and not len(parent[-1]):
                del parent[-1]
            continue
        if key in parent and not len(parent[key]):
            del parent[key]
