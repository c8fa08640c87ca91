"""Backfill: one store's minutes and 15-minute intervals copied into another store's gap.

A software meter keeps its own history; a hub that could not reach it for a while has a gap
there. ``export`` reads the meter's 1-minute series and 15-minute rows of a range (its web
server hands them out: /api/history/backfill); ``fill`` writes them into the hub's store.

Energy stays exact: the hub's own counters already put the whole gap's energy into the
interval and day of the first reading after the gap. ``fill`` replaces each interval the
gap touched with the meter's, and takes the energy it added there back out of that first
interval (and its day), so every interval and day ends up with the meter's energy and the
total does not change. Minutes the hub has are never overwritten; raw seconds are not
copied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pm4324.history.codec import pack, unpack
from pm4324.history.layout import ENERGY_ELEMENTS, LAYOUT, REGISTERS
from pm4324.history.store import DAY_S, INTERVAL_S, HistoryStore, local_dates

_SHAPE = (3, len(ENERGY_ELEMENTS), len(REGISTERS))


@dataclass
class Interval:
    t: int
    seconds: int
    agg: np.ndarray  # (3, n_channels) mean, min, max
    energy: np.ndarray  # (3, 32, 7) energy in it, registers at its start, at its end


def export(store: HistoryStore, meter: int, start: float, end: float
           ) -> tuple[list[tuple[int, np.ndarray]], list[Interval]]:
    """The stored minutes (t, 1-minute series vector) and the whole 15-minute rows in
    [start, end) (intervals starting in it)."""
    db = store.db
    grids: dict[int, np.ndarray] = {}
    first_day, last_day = int(start // DAY_S), int((end - 1) // DAY_S)
    for element, day, data in db.execute(
            f"SELECT element, day, data FROM {db.t('minute_block')} WHERE meter = ? AND day >= ?"
            " AND day <= ?", (meter, first_day, last_day)):
        rows = LAYOUT.block_rows.get(element)
        if rows is not None:
            grid = grids.setdefault(day, np.full((LAYOUT.n_minute, 1440), np.nan, "<f4"))
            grid[rows] = unpack(bytes(data))
    for t, data in db.execute(f"SELECT t, data FROM {db.t('minute_recent')} WHERE meter = ? AND"
                              " t >= ? AND t < ?", (meter, int(start), end)):
        grid = grids.setdefault(t // DAY_S, np.full((LAYOUT.n_minute, 1440), np.nan, "<f4"))
        grid[:, (t % DAY_S) // 60] = np.frombuffer(bytes(data), "<f4")
    minutes = []
    for day in sorted(grids):
        grid = grids[day]
        for col in np.flatnonzero(~np.isnan(grid).all(axis=0)):
            t = day * DAY_S + int(col) * 60
            if start <= t < end:
                minutes.append((t, grid[:, col].astype(float)))
    intervals = [Interval(int(t), int(s), unpack(bytes(agg)).astype(float),
                          unpack(bytes(e)).reshape(_SHAPE).astype(float))
                 for t, s, agg, e in db.execute(
                     f"SELECT t, seconds, agg, energy FROM {db.t('interval')} WHERE meter = ? AND"
                     " t >= ? AND t < ? ORDER BY t", (meter, int(start), end))]
    return minutes, intervals


def fill(store: HistoryStore, meter: int, gap: tuple[float, float], minutes: list[tuple[int, np.ndarray]],
         intervals: list[Interval], reason: str = "backfilled") -> int:
    """Write another store's minutes and intervals of ``gap`` (last second before it, first
    after it) into meter ``meter``; one transaction. Returns the minutes added.

    Call it from the thread that writes this meter's history (the hub's), so the writer's
    open interval is not written over with the old energy afterwards."""
    a, b = gap
    minutes = [(t, v) for t, v in minutes if a < t + 60 and t < b]
    chosen = [iv for iv in intervals if iv.t + INTERVAL_S > a and iv.t <= b - INTERVAL_S]
    after = int(b // INTERVAL_S * INTERVAL_S)  # holds the gap's energy (counter difference)
    db = store.db
    with db.transaction():
        added = _minutes(store, meter, minutes)
        moved = np.zeros(_SHAPE[1:])
        by_day: dict[str, np.ndarray] = {}
        for iv in chosen:
            old = _interval(store, meter, iv.t)
            diff = np.nan_to_num(iv.energy[0] - (old.energy[0] if old is not None else 0.0))
            moved += diff
            day = str(local_dates(np.array([iv.t]), store.tz)[0])
            by_day[day] = by_day.get(day, 0.0) + diff
            _put_interval(store, meter, iv)
        if chosen:
            _take_back(store, meter, after, moved)
            day_after = str(local_dates(np.array([after]), store.tz)[0])
            by_day[day_after] = by_day.get(day_after, 0.0) - moved
            for day, diff in by_day.items():
                _add_day(store, meter, day, diff)
        db.execute(f"UPDATE {db.t('gap')} SET reason = ? WHERE meter = ? AND start_t = ?",
                   (reason, meter, a))
    return added


def _minutes(store: HistoryStore, meter: int, minutes: list[tuple[int, np.ndarray]]) -> int:
    """Add minutes the store does not have (recent ones as rows, older days into blocks)."""
    db = store.db
    recent_day = int(store.load_state(meter).last_time or 0) // DAY_S  # the writer's rows' day
    added = 0
    by_day: dict[int, list[tuple[int, np.ndarray]]] = {}
    for t, v in minutes:
        by_day.setdefault(t // DAY_S, []).append((t, v))
    for day, rows in by_day.items():
        if day == recent_day:
            have = {r[0] for r in db.execute(f"SELECT t FROM {db.t('minute_recent')} WHERE"
                                             " meter = ? AND t >= ? AND t < ?",
                                             (meter, day * DAY_S, (day + 1) * DAY_S))}
            new = [(meter, t, v.astype("<f4").tobytes()) for t, v in rows if t not in have]
            db.executemany(f"INSERT INTO {db.t('minute_recent')} (meter, t, data) VALUES (?, ?, ?)", new)
            added += len(new)
            continue
        grid = np.full((LAYOUT.n_minute, 1440), np.nan, "<f4")
        for t, v in rows:
            grid[:, (t - day * DAY_S) // 60] = v
        existing = dict(db.execute(f"SELECT element, data FROM {db.t('minute_block')} WHERE meter = ?"
                                   " AND day = ?", (meter, day)))
        out, have = [], np.zeros(1440, dtype=bool)
        for key, rows_of in LAYOUT.block_rows.items():
            block = grid[rows_of]
            if key in existing:
                old = unpack(bytes(existing[key]))
                have |= ~np.isnan(old).all(axis=0)
                block = np.where(np.isnan(old), block, old)
            if not np.isnan(block).all():
                out.append((meter, key, day, pack(block, short=True)))
        db.executemany(f"INSERT INTO {db.t('minute_block')} (meter, element, day, data) VALUES"
                       " (?, ?, ?, ?) ON CONFLICT (meter, element, day) DO UPDATE SET data ="
                       " excluded.data", out)
        added += sum(not have[(t - day * DAY_S) // 60] for t, _ in rows)
    return added


def _interval(store: HistoryStore, meter: int, t: int) -> Interval | None:
    db = store.db
    rows = db.execute(f"SELECT seconds, agg, energy FROM {db.t('interval')} WHERE meter = ? AND t = ?",
                      (meter, t))
    if not rows:
        return None
    s, agg, e = rows[0]
    return Interval(t, int(s), unpack(bytes(agg)).astype(float),
                    unpack(bytes(e)).reshape(_SHAPE).astype(float))


def _put_interval(store: HistoryStore, meter: int, iv: Interval) -> None:
    db = store.db
    db.execute(f"INSERT INTO {db.t('interval')} (meter, t, seconds, agg, energy, demand) VALUES"
               " (?, ?, ?, ?, ?, ?) ON CONFLICT (meter, t) DO UPDATE SET seconds = excluded.seconds,"
               " agg = excluded.agg, energy = excluded.energy, demand = excluded.demand",
               (meter, iv.t, iv.seconds, pack(iv.agg, short=True), pack(iv.energy.reshape(3, -1)),
                iv.energy[0].astype("<f4").tobytes()))


def _take_back(store: HistoryStore, meter: int, t: int, moved: np.ndarray) -> None:
    """The first interval after the gap gives back the energy now in the filled intervals
    (also in the writer's open interval, which the next write stores again)."""
    iv = _interval(store, meter, t)
    if iv is not None:
        iv.energy[0] -= moved
        _put_interval(store, meter, iv)
    state = store.load_state(meter)
    if state.interval is not None and state.interval.t == t:
        state.interval.energy[0] -= moved
        store._save_state(meter, state)


def _add_day(store: HistoryStore, meter: int, day: str, diff: np.ndarray) -> None:
    db = store.db
    rows = db.execute(f"SELECT seconds, energy FROM {db.t('day')} WHERE meter = ? AND date = ?",
                      (meter, day))
    if rows:
        e = np.frombuffer(bytes(rows[0][1]), "<f8").reshape(_SHAPE).copy()
        e[0] += diff
        db.execute(f"UPDATE {db.t('day')} SET energy = ? WHERE meter = ? AND date = ?",
                   (e.astype("<f8").tobytes(), meter, day))
    else:
        e = np.full(_SHAPE, np.nan)
        e[0] = diff
        db.execute(f"INSERT INTO {db.t('day')} (meter, date, seconds, energy) VALUES (?, ?, ?, ?)",
                   (meter, day, 0, e.astype("<f8").tobytes()))
