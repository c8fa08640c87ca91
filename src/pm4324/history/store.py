"""The history store: writes batches of whole minutes of one or many meters in one transaction.

Tables (see docs/history.md for sizes and retention):

- ``minute_recent``: the current UTC day's minutes, one row each (1-minute series vector);
  ``minute_block``: older days packed per element, quantity and UTC day ("ct7.p_w": its
  mean/min/max x 1440, compressed), so a trend reads only its own quantity.
- ``raw``: the 1-second values of each minute (the 1-minute means' channels), kept for the
  raw window (default 7 days).
- ``interval``: 15-minute rows: mean/min/max of every channel, and the energy registers'
  values and the energy in the interval (Wh, from counter differences); ``demand`` repeats
  the energy as plain float32 so a month of demand reads without decompressing.
- ``day``: energy per register per local calendar day (the configured time zone, so DST days
  hold 23 or 25 hours), with the first and last counter values of the day.
- ``gap``, ``event`` (resets with the pre-reset value, rollovers, offline/online), ``state``
  (what a writer needs to continue after a restart: the last counters and the open interval).

Crash safety: one batch (a flush, once a minute by default) is one transaction, so after a
SIGKILL or a power cut the store holds every flushed minute whole and nothing of the batch
in flight; the counters in ``state`` are the newest flushed, so the energy of the lost seconds
reappears in the first minute after the restart and the daily energy stays exact.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from pm4324.history.aggregate import CounterEvent, MinuteBatch
from pm4324.history.codec import pack, unpack
from pm4324.history.db import Db, HistoryError, open_db
from pm4324.history.layout import ENERGY_ELEMENTS, LAYOUT, REGISTERS

FORMAT = "1"
DAY_S = 86400
INTERVAL_S = 900
DEFAULT_RAW_DAYS = 7.0
DEFAULT_KEEP_YEARS = 10.0
_NE, _NR = len(ENERGY_ELEMENTS), len(REGISTERS)
_ENERGY_SHAPE = (3, _NE, _NR)  # energy in the interval/day, first counters, last counters


def system_time_zone() -> str:
    """$TZ, else /etc/timezone, else the /etc/localtime link, else UTC."""
    if os.environ.get("TZ", "").strip(":"):
        return os.environ["TZ"].strip(":")
    etc = Path("/etc/timezone")
    if etc.exists() and (name := etc.read_text().strip()):
        return name
    link = Path("/etc/localtime")
    if link.is_symlink() and "zoneinfo/" in (target := str(link.resolve())):
        return target.split("zoneinfo/", 1)[1]
    return "UTC"


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise HistoryError(f"time zone {name!r} is unknown (use an IANA name like Europe/Berlin)") from None


@dataclass
class OpenInterval:
    """The 15-minute interval being filled (persisted in ``state`` with every batch)."""

    t: int
    sums: np.ndarray
    counts: np.ndarray
    mins: np.ndarray
    maxs: np.ndarray
    energy: np.ndarray  # (3, 32, 7): energy, first counters, last counters
    seconds: int

    def encode(self) -> bytes:
        arrays = np.concatenate([self.sums, self.counts, self.mins, self.maxs, self.energy.ravel()])
        return struct.pack("<qi", self.t, self.seconds) + arrays.astype("<f8").tobytes()

    @classmethod
    def decode(cls, blob: bytes) -> OpenInterval:
        t, seconds = struct.unpack_from("<qi", blob)
        a = np.frombuffer(blob, dtype="<f8", offset=12)
        n = LAYOUT.n_channels
        return cls(t, a[:n].copy(), a[n:2 * n].copy(), a[2 * n:3 * n].copy(), a[3 * n:4 * n].copy(),
                   a[4 * n:].reshape(_ENERGY_SHAPE).copy(), seconds)


@dataclass
class WriterState:
    """Where a meter's history stopped: the newest flushed second and its counters."""

    last_time: float | None = None
    counters: np.ndarray | None = None
    interval: OpenInterval | None = None
    extra: dict = field(default_factory=dict)


class HistoryStore:
    """One history database (SQLite file or PostgreSQL URL) holding any number of meters."""

    def __init__(self, db: Db, time_zone: str, raw_days: float, keep_years: float):
        self.db = db
        self.time_zone = time_zone
        self.tz = zone(time_zone)
        self.raw_window_s = raw_days * DAY_S
        self.keep_s = keep_years * 365.25 * DAY_S

    @classmethod
    def open(cls, where: str | Path, time_zone: str | None = None, raw_days: float = DEFAULT_RAW_DAYS,
             keep_years: float = DEFAULT_KEEP_YEARS, readonly: bool = False) -> HistoryStore:
        """Open or create; the time zone is fixed at creation (days already stored keep it)."""
        if readonly and not str(where).startswith("postgres") and not Path(where).exists():
            raise HistoryError(f"{where}: no history there (`pm4324 run` keeps one; "
                               "`pm4324 history synth` writes one)")
        db = open_db(where, readonly=readonly)
        try:
            meta = dict(db.execute(f"SELECT key, value FROM {db.t('meta')}"))
            if meta and meta.get("format") != FORMAT:
                raise HistoryError(f"{where}: history format {meta.get('format')!r}, expected {FORMAT}")
            stored_tz = meta.get("time_zone")
            if stored_tz and time_zone and stored_tz != time_zone:
                raise HistoryError(f"{where}: the history was created for time zone {stored_tz}, "
                                   f"not {time_zone} (its days are cut at {stored_tz} midnight)")
            tz = stored_tz or time_zone or system_time_zone()
            zone(tz)
            if not meta and not readonly:
                with db.transaction():
                    db.executemany(f"INSERT INTO {db.t('meta')} (key, value) VALUES (?, ?)"
                                   " ON CONFLICT (key) DO NOTHING",
                                   [("format", FORMAT), ("time_zone", tz)])
                tz = dict(db.execute(f"SELECT key, value FROM {db.t('meta')}"))["time_zone"]
        except BaseException:
            db.close()
            raise
        return cls(db, tz, raw_days, keep_years)

    def close(self) -> None:
        self.db.close()

    # -- meters ------------------------------------------------------------------------------

    def meter_id(self, key: str, model: str | None = None, names: dict | None = None) -> int:
        """The id of meter ``key`` (created on first use); model and names are updated."""
        db = self.db
        with db.transaction():
            db.execute(f"INSERT INTO {db.t('meters')} (key, model, names) VALUES (?, ?, ?)"
                       " ON CONFLICT (key) DO NOTHING", (key, model, json.dumps(names or {})))
            if model is not None or names is not None:
                row = db.execute(f"SELECT model, names FROM {db.t('meters')} WHERE key = ?", (key,))[0]
                new = (model or row[0], json.dumps(names) if names is not None else row[1])
                if new != tuple(row):
                    db.execute(f"UPDATE {db.t('meters')} SET model = ?, names = ? WHERE key = ?",
                               (*new, key))
            return int(db.execute(f"SELECT id FROM {db.t('meters')} WHERE key = ?", (key,))[0][0])

    def meters(self) -> list[dict]:
        """Every meter in the store: id, key, model, names."""
        rows = self.db.execute(f"SELECT id, key, model, names FROM {self.db.t('meters')} ORDER BY id")
        return [{"id": r[0], "key": r[1], "model": r[2], "names": json.loads(r[3])} for r in rows]

    def find_meter(self, key: str | None) -> int:
        """The id of ``key``, or of the only meter when None; HistoryError otherwise."""
        meters = self.meters()
        if key is None and len(meters) == 1:
            return meters[0]["id"]
        for m in meters:
            if m["key"] == key:
                return m["id"]
        known = ", ".join(m["key"] for m in meters) or "none yet"
        raise HistoryError(f"meter {key!r} is not in the history (meters: {known})"
                           if key else f"the history holds several meters: choose one of {known}")

    # -- state -------------------------------------------------------------------------------

    def load_state(self, meter: int) -> WriterState:
        rows = self.db.execute(f"SELECT data FROM {self.db.t('state')} WHERE meter = ?", (meter,))
        if not rows:
            return WriterState()
        blob = bytes(rows[0][0])
        head_len, last_time = struct.unpack_from("<Id", blob)
        extra = json.loads(blob[12:12 + head_len])
        offset = 12 + head_len
        counters = np.frombuffer(blob, "<f8", _NE * _NR, offset).reshape(_NE, _NR).copy()
        rest = blob[offset + counters.nbytes:]
        return WriterState(last_time, counters, OpenInterval.decode(rest) if rest else None, extra)

    def _save_state(self, meter: int, state: WriterState) -> None:
        head = json.dumps(state.extra).encode()
        counters = state.counters if state.counters is not None else np.full((_NE, _NR), np.nan)
        blob = (struct.pack("<Id", len(head), state.last_time or 0.0) + head
                + counters.astype("<f8").tobytes()
                + (state.interval.encode() if state.interval else b""))
        self.db.execute(f"INSERT INTO {self.db.t('state')} (meter, data) VALUES (?, ?) ON CONFLICT"
                        " (meter) DO UPDATE SET data = excluded.data", (meter, blob))

    # -- writing -----------------------------------------------------------------------------

    def write(self, meter: int, batch: MinuteBatch | None, last_time: float | None,
              events: list[CounterEvent] | tuple = (), gaps: list[tuple[float, float, str]] | tuple = (),
              notes: list[tuple[float, str, str]] | tuple = (),
              pq: list[tuple[float, int, str, str]] | tuple = ()) -> None:
        """One transaction: minutes, raw seconds, intervals, days, gaps, events, power-quality
        records (t, main, kind, JSON; history/pq.py) and the state."""
        db = self.db
        with db.transaction():
            state = self.load_state(meter)
            if batch is not None and batch.n:
                self._write_minutes(meter, batch)
                if batch.raw:
                    self._write_raw(meter, batch)
                state.interval = self._write_intervals(meter, batch, state.interval, state.counters)
                self._write_days(meter, batch, state.counters)
                state.counters = batch.counters[-1]
            if last_time is not None:
                state.last_time = last_time
            db.executemany(f"INSERT INTO {db.t('gap')} (meter, start_t, end_t, reason) VALUES"
                           " (?, ?, ?, ?) ON CONFLICT (meter, start_t) DO UPDATE SET end_t ="
                           " excluded.end_t", [(meter, *g) for g in gaps])
            rows = [(meter, e.time, e.kind, f"{e.element} {e.register}: {e.before_wh:.3f} Wh -> "
                     f"{e.after_wh:.3f} Wh") for e in events]
            rows += [(meter, t, kind, text) for t, kind, text in notes]
            db.executemany(f"INSERT INTO {db.t('event')} (meter, t, kind, text) VALUES (?, ?, ?, ?)",
                           rows)
            db.executemany(f"INSERT INTO {db.t('pq')} (meter, t, main, kind, data) VALUES"
                           " (?, ?, ?, ?, ?)", [(meter, *r) for r in pq])
            self._save_state(meter, state)

    def _write_minutes(self, meter: int, batch: MinuteBatch) -> None:
        db = self.db
        stats = batch.stats()
        series = np.stack([LAYOUT.minute_values(s) for s in stats]).astype("<f4")  # (n, n_minute)
        days = batch.t // DAY_S
        last_day = int(days[-1])
        bounds = np.r_[np.flatnonzero(np.r_[True, days[1:] != days[:-1]]), batch.n]
        for a, b in zip(bounds[:-1], bounds[1:]):
            rows, ts, d = series[a:b], batch.t[a:b], int(days[a])
            if d < last_day:
                self._write_block(meter, d, ts, rows)
            else:
                db.executemany(f"INSERT INTO {db.t('minute_recent')} (meter, t, data) VALUES (?, ?, ?)"
                               " ON CONFLICT (meter, t) DO UPDATE SET data = excluded.data",
                               [(meter, int(t), r.tobytes()) for t, r in zip(ts, rows)])
        older = db.execute(f"SELECT DISTINCT t / {DAY_S} FROM {db.t('minute_recent')} WHERE meter = ?"
                           f" AND t < ?", (meter, last_day * DAY_S))
        for (d,) in older:
            self._write_block(meter, int(d), np.zeros(0, np.int64), np.zeros((0, LAYOUT.n_minute), "<f4"))
        if last_day > int(days[0]) or older:  # a day was packed: once a day, drop the expired
            self._expire(meter, float(batch.t[-1]) - self.keep_s)

    def _expire(self, meter: int, before: float) -> None:
        """Delete this meter's rows older than the retention (``keep_years``)."""
        db = self.db
        first_date = datetime.fromtimestamp(max(before, 0), self.tz).date().isoformat()
        for table, cond, arg in (("minute_block", "day < ?", int(before // DAY_S)),
                                 ("interval", "t < ?", before), ("day", "date < ?", first_date),
                                 ("gap", "end_t < ?", before), ("event", "t < ?", before)):
            db.execute(f"DELETE FROM {db.t(table)} WHERE meter = ? AND {cond}", (meter, arg))

    def _write_block(self, meter: int, day: int, ts: np.ndarray, rows: np.ndarray) -> None:
        """Pack one UTC day (this batch's rows, the recent rows, an existing block) per element."""
        db = self.db
        lo, hi = day * DAY_S, (day + 1) * DAY_S
        recent = db.execute(f"SELECT t, data FROM {db.t('minute_recent')} WHERE meter = ? AND t >= ?"
                            " AND t < ?", (meter, lo, hi))
        grid = np.full((LAYOUT.n_minute, 1440), np.nan, dtype="<f4")
        for t, data in recent:
            grid[:, (t - lo) // 60] = np.frombuffer(data, "<f4")
        if len(ts):
            grid[:, (ts - lo) // 60] = rows.T
        out = []
        existing = {e: d for e, d in db.execute(
            f"SELECT element, data FROM {db.t('minute_block')} WHERE meter = ? AND day = ?", (meter, day))}
        for key, rows_of in LAYOUT.block_rows.items():
            block = grid[rows_of]
            if key in existing:
                old = unpack(bytes(existing[key]))
                block = np.where(np.isnan(old), block, old)
            if np.isnan(block).all():
                continue
            out.append((meter, key, day, pack(block)))
        db.executemany(f"INSERT INTO {db.t('minute_block')} (meter, element, day, data) VALUES"
                       " (?, ?, ?, ?) ON CONFLICT (meter, element, day) DO UPDATE SET data ="
                       " excluded.data", out)
        db.execute(f"DELETE FROM {db.t('minute_recent')} WHERE meter = ? AND t >= ? AND t < ?",
                   (meter, lo, hi))

    def _write_raw(self, meter: int, batch: MinuteBatch) -> None:
        db = self.db
        rows = []
        for t, (offsets, values) in zip(batch.t, batch.raw):
            table = np.concatenate([offsets[:, None], values], axis=1).astype("<f4")
            rows.append((meter, int(t), pack(table, level=1)))
        db.executemany(f"INSERT INTO {db.t('raw')} (meter, t, data) VALUES (?, ?, ?)"
                       " ON CONFLICT (meter, t) DO UPDATE SET data = excluded.data", rows)
        db.execute(f"DELETE FROM {db.t('raw')} WHERE meter = ? AND t < ?",
                   (meter, int(batch.t[-1] - self.raw_window_s)))

    def _write_intervals(self, meter: int, batch: MinuteBatch, open_: OpenInterval | None,
                         before: np.ndarray | None) -> OpenInterval:
        ivs = batch.t // INTERVAL_S * INTERVAL_S
        starts = np.flatnonzero(np.r_[True, ivs[1:] != ivs[:-1]])
        sums = np.add.reduceat(batch.sums, starts)
        counts = np.add.reduceat(batch.counts, starts)
        mins = np.fmin.reduceat(batch.mins, starts)
        maxs = np.fmax.reduceat(batch.maxs, starts)
        deltas = np.add.reduceat(batch.deltas, starts)
        seconds = np.add.reduceat(batch.seconds, starts)
        first = _first_counters(batch, starts, before)
        last = batch.counters[np.r_[starts[1:] - 1, batch.n - 1]]
        rows, current = [], None
        for j, s in enumerate(starts):
            iv = OpenInterval(int(ivs[s]), sums[j], counts[j].astype(float), mins[j], maxs[j],
                              np.stack([deltas[j], first[j], last[j]]), int(seconds[j]))
            if j == 0 and open_ is not None and open_.t == iv.t:
                iv = _merge(open_, iv)
            rows.append(self._interval_row(meter, iv))
            current = iv
        db = self.db
        db.executemany(f"INSERT INTO {db.t('interval')} (meter, t, seconds, agg, energy, demand)"
                       " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (meter, t) DO UPDATE SET seconds ="
                       " excluded.seconds, agg = excluded.agg, energy = excluded.energy, demand ="
                       " excluded.demand", rows)
        assert current is not None
        return current

    @staticmethod
    def _interval_row(meter: int, iv: OpenInterval) -> tuple:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = iv.sums / iv.counts
        agg = np.stack([mean, iv.mins, iv.maxs]).astype("<f4")
        return (meter, iv.t, iv.seconds, pack(agg), pack(iv.energy.reshape(3, -1)),
                iv.energy[0].astype("<f4").tobytes())

    def _write_days(self, meter: int, batch: MinuteBatch, before: np.ndarray | None) -> None:
        db = self.db
        dates = local_dates(batch.t, self.tz)
        starts = np.flatnonzero(np.r_[True, dates[1:] != dates[:-1]])
        deltas = np.add.reduceat(batch.deltas, starts)
        seconds = np.add.reduceat(batch.seconds, starts)
        first = _first_counters(batch, starts, before)
        last = batch.counters[np.r_[starts[1:] - 1, batch.n - 1]]
        for j, s in enumerate(starts):
            d = str(dates[s])
            energy = np.stack([deltas[j], first[j], last[j]])
            total = int(seconds[j])
            row = db.execute(f"SELECT seconds, energy FROM {db.t('day')} WHERE meter = ? AND date = ?",
                             (meter, d))
            if row:
                old = np.frombuffer(bytes(row[0][1]), "<f8").reshape(_ENERGY_SHAPE)
                energy[0] += old[0]
                energy[1] = np.where(np.isnan(old[1]), energy[1], old[1])
                total += row[0][0]
            db.execute(f"INSERT INTO {db.t('day')} (meter, date, seconds, energy) VALUES (?, ?, ?, ?)"
                       " ON CONFLICT (meter, date) DO UPDATE SET seconds = excluded.seconds,"
                       " energy = excluded.energy", (meter, d, total, energy.astype("<f8").tobytes()))

    # -- upkeep ------------------------------------------------------------------------------

    def prune(self, before: float | None = None, raw_before: float | None = None) -> dict[str, int]:
        """Delete minutes/intervals/days older than ``before`` (default: the retention) and raw
        seconds older than ``raw_before`` (default: the raw window); returns rows deleted."""
        db = self.db
        newest = db.execute(f"SELECT MAX(t) FROM {db.t('interval')}")[0][0]
        if newest is None:
            return {}
        before = newest - self.keep_s if before is None else before
        raw_before = newest - self.raw_window_s if raw_before is None else raw_before
        first_date = datetime.fromtimestamp(before, self.tz).date().isoformat()
        counts = {}
        with db.transaction():
            for table, cond, arg in (("raw", "t < ?", raw_before),
                                     ("minute_recent", "t < ?", before),
                                     ("minute_block", "day < ?", before // DAY_S),
                                     ("interval", "t < ?", before),
                                     ("day", "date < ?", first_date),
                                     ("gap", "end_t < ?", before),
                                     ("event", "t < ?", before),
                                     ("pq", "t < ?", before)):
                n = db.execute(f"SELECT COUNT(*) FROM {db.t(table)} WHERE {cond}", (arg,))[0][0]
                db.execute(f"DELETE FROM {db.t(table)} WHERE {cond}", (arg,))
                counts[table] = int(n)
        return counts


def _first_counters(batch: MinuteBatch, starts: np.ndarray, before: np.ndarray | None) -> np.ndarray:
    """The register values at the start of each group: the last values known before it, or
    the first reading where none was known (the first reading adds no energy)."""
    prev = np.full((1, _NE, _NR), np.nan) if before is None else before[None]
    known = np.concatenate([prev, batch.counters])[starts]
    return np.where(np.isnan(known), batch.counters[starts] - batch.deltas[starts], known)


def _merge(a: OpenInterval, b: OpenInterval) -> OpenInterval:
    energy = np.stack([a.energy[0] + b.energy[0], np.where(np.isnan(a.energy[1]), b.energy[1],
                                                           a.energy[1]), b.energy[2]])
    return OpenInterval(a.t, a.sums + b.sums, a.counts + b.counts, np.fmin(a.mins, b.mins),
                        np.fmax(a.maxs, b.maxs), energy, a.seconds + b.seconds)


def local_dates(t: np.ndarray, tz: ZoneInfo) -> np.ndarray:
    """The local calendar date (ISO text) of each Unix time; one conversion per quarter hour
    (every zone's midnight falls on a quarter hour)."""
    quarters = np.asarray(t) // INTERVAL_S
    keys, inverse = np.unique(quarters, return_inverse=True)
    names = np.array([datetime.fromtimestamp(int(k) * INTERVAL_S, tz).date().isoformat() for k in keys])
    return names[inverse]

