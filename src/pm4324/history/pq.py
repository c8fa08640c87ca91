"""Power-quality records in the history store: the ``pq`` table.

A second's ``Snapshot.pq`` (device/pq.py, docs/power-quality.md) carries the latest
aggregates of each main and the voltage events that ended in it. ``PqRecorder`` keeps what
is new: each 10-minute and 2-hour value, the 10-minute voltage harmonics and frequency
summary, the CTs' 10-minute values (main 0) and every event, one row (t, main, kind, JSON)
each, written with the writer's next batch. ``read`` returns them for a report.
"""

from __future__ import annotations

import json
from typing import Any

# kind in the table <- key of a main's section in Snapshot.pq
MAIN_KINDS = {"ten_minutes": "10 min", "two_hours": "2 h", "harmonics_10min": "harmonics",
              "frequency_10min": "frequency"}


class PqRecorder:
    """Turns successive ``Snapshot.pq`` sections into new rows (t, main, kind, JSON)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[int, str], float] = {}

    def rows(self, pq: dict[str, Any] | None) -> list[tuple[float, int, str, str]]:
        if not pq:
            return []
        out = []
        for main in pq.get("mains", ()):
            m = int(main["main"])
            for key, kind in MAIN_KINDS.items():
                rec = main.get(key)
                if rec and self._new(m, kind, rec["end_s"]):
                    if kind == "10 min":  # what the values are judged against
                        rec = {**rec, "udin_v": main["udin_v"], "nominal_hz": main["nominal_hz"]}
                    out.append((rec["end_s"], m, kind, json.dumps(rec)))
        cts = pq.get("cts") or []
        if cts and self._new(0, "cts", cts[0]["end"]):
            out.append((cts[0]["end"], 0, "cts", json.dumps(cts)))
        for e in pq.get("events", ()):
            out.append((e["start_s"], int(e["main"]), "event", json.dumps(e)))
        return out

    def _new(self, main: int, kind: str, t: float) -> bool:
        if self._seen.get((main, kind), float("-inf")) >= t:
            return False
        self._seen[(main, kind)] = t
        return True


def read(db: Any, meter: int, t0: float, t1: float, kind: str | None = None,
         main: int | None = None) -> list[tuple[float, int, str, dict[str, Any]]]:
    """Rows with t0 <= t < t1 (optionally one kind and main), oldest first."""
    sql = f"SELECT t, main, kind, data FROM {db.t('pq')} WHERE meter = ? AND t >= ? AND t < ?"
    args: list[Any] = [meter, t0, t1]
    if kind is not None:
        sql, args = sql + " AND kind = ?", [*args, kind]
    if main is not None:
        sql, args = sql + " AND main = ?", [*args, main]
    rows = db.execute(sql + " ORDER BY t", tuple(args))
    return [(float(t), int(m), k, json.loads(d)) for t, m, k, d in rows]
