"""Feeding one meter's seconds into the history, in batches.

``HistoryWriter.add(frame)`` costs a few numpy operations per second; every ``flush_s``
seconds of meter time (60 by default) the finished minutes, their raw seconds, the 15-minute
interval, the day and the writer's state go to the store in ONE transaction. So history
costs one fsync a minute, and a crash loses at most the unflushed seconds (``flush_s`` plus
the current minute) of the trend, never energy: the counters are differenced across the loss.

A pause longer than ``gap_s`` between two seconds (a restart, an unreachable meter) is
recorded as a gap; nothing is interpolated over it.
"""

from __future__ import annotations

from typing import Any

from pm4324.history.aggregate import Counters, MinuteAccumulator, MinuteBatch
from pm4324.history.layout import Frame, frame_from_dict, frame_from_snapshot
from pm4324.history.pq import PqRecorder
from pm4324.history.store import HistoryStore
from pm4324.snapshot import Snapshot

DEFAULT_FLUSH_S = 60.0


class HistoryWriter:
    """One meter's writer; ``key`` names the meter in the store ("local", a hub's meter name)."""

    def __init__(self, store: HistoryStore, key: str, *, model: str | None = None,
                 names: dict | None = None, flush_s: float = DEFAULT_FLUSH_S, gap_s: float = 5.0,
                 keep_raw: bool = True):
        self.store = store
        self.key = key
        self.meter = store.meter_id(key, model, names)
        self.flush_s = flush_s
        self.gap_s = gap_s
        state = store.load_state(self.meter)
        self.last_time = state.last_time
        self._acc = MinuteAccumulator(Counters(state.counters), keep_raw=keep_raw)
        self._done: list[MinuteBatch] = []
        self._gaps: list[tuple[float, float, str]] = []
        self._notes: list[tuple[float, str, str]] = []
        self._pq = PqRecorder()
        self._pq_rows: list[tuple[float, int, str, str]] = []
        self._flushed_at: float | None = None
        self._gap_reason = "restart"
        # after a restart, or marked offline: the next silence is a gap, however short
        self._offline = self.last_time is not None
        self._done_until = self.last_time  # the last second of the finished minutes
        self.flushes = 0  # batches written (each one transaction)
        self.written_until = self.last_time  # the newest second in the store

    def add_snapshot(self, snap: Snapshot) -> None:
        self._pq_rows += self._pq.rows(snap.pq)
        if snap.duration_s > 0:  # a second without a whole cycle holds no measurement
            self.add(frame_from_snapshot(snap))

    def add_dict(self, d: dict[str, Any]) -> None:
        self.add(frame_from_dict(d))

    def add(self, frame: Frame) -> None:
        """One second; seconds not after the last one (a clock set back) are dropped."""
        t = frame.time
        if self.last_time is not None:
            if t <= self.last_time:
                return
            silent = t - self.last_time
            if silent > self.gap_s or (self._offline and silent > 1.0):
                self._gaps.append((self.last_time, t, self._gap_reason))
        self._gap_reason, self._offline = "no data", False
        done = self._acc.add(frame)
        if done is not None:
            self._done.append(done)
            self._done_until = self.last_time
        self.last_time = t
        if self._flushed_at is None:
            self._flushed_at = t
        if t - self._flushed_at >= self.flush_s:
            self.flush(partial=False)

    def note(self, t: float, kind: str, text: str, gap_reason: str | None = None) -> None:
        """An event for the store (e.g. ``offline``); with ``gap_reason`` the silence up to the
        next second is a gap of that reason, however short."""
        self._notes.append((t, kind, text))
        if gap_reason:
            self._gap_reason, self._offline = gap_reason, True

    def record_gap(self, until: float, reason: str) -> None:
        """A gap from the last second to ``until`` (a meter still silent when we stop)."""
        if self.last_time is not None and until - self.last_time > self.gap_s:
            self._gaps.append((self.last_time, until, reason))

    def flush(self, partial: bool = True) -> None:
        """Write the finished minutes (and, with ``partial``, the minute in progress)."""
        if partial and (rest := self._acc.finish()) is not None:
            self._done.append(rest)
        if not (partial or self._done or self._gaps or self._notes or self._acc.events
                or self._pq_rows):
            self._flushed_at = self.last_time
            return  # nothing whole to write yet
        batch = MinuteBatch.concat(self._done) if self._done else None
        events, self._acc.events = self._acc.events, []
        until = self.last_time if partial else self._done_until
        self.store.write(self.meter, batch, until, events, self._gaps, self._notes, self._pq_rows)
        self._done, self._gaps, self._notes, self._pq_rows = [], [], [], []
        self._flushed_at = self.last_time
        self.written_until = until
        self.flushes += 1

    def close(self) -> None:
        self.flush(partial=True)
