"""Backfill: after an outage, the hub fetches what it missed from a software meter's history.

A software meter keeps its own history, so a gap in the hub's (the hub was stopped, the
network was down) need not stay a gap. For a ``[[meters]]`` entry with ``web =
"http://HOST:PORT"`` (the meter's ``run --http``), the hub asks the meter's
``/api/history/backfill`` for the gap's 1-minute series and 15-minute intervals, 6 hours per
request, and ``history.fill`` writes them into its own store; the energy stays the hub's
counter difference, spread over the intervals as the meter measured it (docs/hub.md).

Fetching runs on a thread of its own; writing happens in the hub's thread (a listener of
every reading), the only one that touches the store. A gap is tried once its end is written;
a meter whose web does not answer is asked again after ``RETRY_S``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

from pm4324.history import HistoryStore
from pm4324.history.fill import Interval, fill
from pm4324.history.store import INTERVAL_S
from pm4324.snapshot import Snapshot

log = logging.getLogger(__name__)
PAGE_S = 6 * 3600  # the meter answers at most 6 hours at once
RETRY_S = 60.0
CHECK_S = 10.0  # how often the store is asked for new gaps
DONE = "backfilled"
Job = tuple[str, int, tuple[float, float, str]]  # meter key, store id, (start, end, reason)


def fetch(client: httpx.Client, url: str, start: float, end: float
          ) -> tuple[list[tuple[int, np.ndarray]], list[Interval]]:
    """The meter's minutes and intervals of [start, end), page by page."""
    minutes: list[tuple[int, np.ndarray]] = []
    intervals: list[Interval] = []
    a = start
    while a < end:
        b = min(end, a + PAGE_S)
        r = client.get(f"{url}/api/history/backfill", params={"start": a, "end": b})
        if r.status_code != 200:
            reason = r.json().get("reason", r.reason_phrase) if "json" in r.headers.get(
                "content-type", "") else r.reason_phrase
            raise httpx.HTTPError(f"{url} answered {r.status_code}: {reason}")
        page = r.json()
        minutes += [(m["t"], _array(m["values"])) for m in page["minutes"]]
        intervals += [Interval(iv["t"], iv["seconds"], _array(iv["agg"]), _array(iv["energy"]))
                      for iv in page["intervals"]]
        a = b
    return minutes, intervals


def _array(x: Any) -> np.ndarray:
    return np.array(x, dtype=float)  # JSON null -> nan


def open_gaps(store: HistoryStore, meter: int) -> list[tuple[float, float, str]]:
    """This meter's gaps not backfilled yet whose end is already written (so the energy
    across each is in the store, in the interval of its first reading)."""
    last = store.load_state(meter).last_time or 0.0
    db = store.db
    return [tuple(r) for r in db.execute(
        f"SELECT start_t, end_t, reason FROM {db.t('gap')} WHERE meter = ? AND end_t <= ? AND"
        " reason NOT LIKE ? ORDER BY start_t", (meter, last, f"%{DONE}%"))]


class Backfiller:
    """``hub.listeners.append(backfiller.on_reading)``; ``start()``, ``stop()``."""

    def __init__(self, store: HistoryStore, meters: dict[str, int], urls: dict[str, str],
                 say: Callable[[str], None] = lambda text: None, timeout_s: float = 30.0):
        self.store, self.meters, self.urls, self.say = store, meters, urls, say
        self.timeout_s = timeout_s
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._done: queue.Queue[tuple[Job, Any]] = queue.Queue()
        self._busy: set[tuple[str, float]] = set()
        self._due: dict[str, float] = {}
        self._thread = threading.Thread(target=self._fetcher, name="hub-backfill", daemon=True)
        self.filled = 0  # gaps filled

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=self.timeout_s + 5)

    def on_reading(self, key: str, _snap: Snapshot | None = None) -> None:
        """In the hub's thread: write what was fetched, then look for new gaps (at most
        every CHECK_S per meter)."""
        self.apply()
        now = time.monotonic()
        if key in self.urls and now >= self._due.get(key, 0.0):
            self._due[key] = now + CHECK_S
            for gap in open_gaps(self.store, self.meters[key]):
                if (key, gap[0]) not in self._busy:
                    self._busy.add((key, gap[0]))
                    self._jobs.put((key, self.meters[key], gap))

    def apply(self, wait_s: float = 0.0) -> None:
        """Write every fetched gap; ``wait_s``: wait that long for the first one."""
        while True:
            try:
                (key, meter, (a, b, reason)), got = self._done.get(timeout=wait_s) if wait_s \
                    else self._done.get_nowait()
            except queue.Empty:
                return
            wait_s = 0.0
            self._busy.discard((key, a))
            if isinstance(got, Exception):
                self._due[key] = time.monotonic() + RETRY_S
                self.say(f"{key}: backfill of {_clock(a)}–{_clock(b)} failed ({got}); again in "
                         f"{RETRY_S:.0f} s")
                continue
            minutes, intervals = got
            tag = f"{reason}, {DONE}" if minutes or intervals else f"{reason}, {DONE}: none kept"
            added = fill(self.store, meter, (a, b), minutes, intervals, reason=tag)
            self.filled += 1
            self.say(f"{key}: backfilled {added} minutes and {len(intervals)} intervals of the gap "
                     f"{_clock(a)}–{_clock(b)} from its history")

    def _fetcher(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            while (job := self._jobs.get()) is not None:
                key, _, (a, b, _) = job
                start = min(a // INTERVAL_S * INTERVAL_S, a // 60 * 60)
                try:
                    got: Any = fetch(client, self.urls[key], start, b)
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    got = exc
                self._done.put((job, got))


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
