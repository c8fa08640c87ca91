"""The hub: polls many meters and keeps their history in one store (docs/hub.md).

Readings from every line arrive on one queue; this thread turns each into the same
``Snapshot`` a local meter publishes (``client.snapshot``), hands it to listeners (the web
and MQTT services, later) and to the meter's ``HistoryWriter``. Only this thread touches
the store, so SQLite sees one writer. A meter that stops answering gets an ``offline``
event and its silence becomes a gap; when it answers again (``online``) its counters give
the energy across the gap exactly.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

from pm4324.client.snapshot import snapshot_from_dict
from pm4324.history import HistoryStore, HistoryWriter
from pm4324.history.layout import frame_from_snapshot
from pm4324.hub.config import HubConfig
from pm4324.hub.poller import Reading, start_lines
from pm4324.snapshot import Snapshot

log = logging.getLogger(__name__)
Listener = Callable[[str, Snapshot], None]
Watcher = Callable[[str, bool], None]  # a meter's key and whether it answers now


class Hub:
    def __init__(self, config: HubConfig, store: HistoryStore,
                 say: Callable[[str], None] = lambda text: None):
        self.config, self.store, self.say = config, store, say
        self.writers = {m.key: HistoryWriter(store, m.key, names=m.names, flush_s=config.flush_s,
                                             gap_s=m.gap_s or max(2.5, 3 * m.poll_s))
                        for m in config.meters}
        self.names = {m.key: m.names for m in config.meters}
        self.online: dict[str, bool | None] = dict.fromkeys(self.writers)
        self.models: dict[str, str | None] = {m["key"]: m["model"] for m in store.meters()}
        self.listeners: list[Listener] = []
        self.watchers: list[Watcher] = []  # told when a meter goes offline or comes back
        self.readings = 0
        self.late_s: deque[float] = deque(maxlen=4096)  # recent polls' lateness (docs/hub.md)
        self._queue: queue.Queue[Reading] = queue.Queue()
        self._stop = threading.Event()

    def run(self, seconds: float | None = None, stop: threading.Event | None = None) -> None:
        """Poll until ``stop`` is set or ``seconds`` have passed; then flush everything."""
        lines = start_lines(self.config.meters, self._queue, self._stop, self.config.max_backoff_s)
        end = None if seconds is None else time.monotonic() + seconds
        try:
            while not (stop is not None and stop.is_set()):
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    break
                try:
                    reading = self._queue.get(timeout=min(0.5, left) if left is not None else 0.5)
                except queue.Empty:
                    continue
                self.handle(reading)
        finally:
            self._stop.set()
            for line in lines:
                line.join(timeout=10)
            while not self._queue.empty():
                self.handle(self._queue.get_nowait())
            now = time.time()
            for key, w in self.writers.items():
                if self.online[key] is False and w.last_time is not None:
                    w.note(now, "stopped", "the hub stopped while the meter was offline")
                    w.record_gap(now, "offline")  # the silence so far, up to the stop
                w.close()

    def handle(self, r: Reading) -> None:
        w = self.writers[r.key]
        was = self.online[r.key]
        self.late_s.append(r.late_s)
        if r.data is None:
            if was is not False:
                self.online[r.key] = False
                w.note(r.time, "offline", r.problem, gap_reason="offline")
                self.say(f"{r.key}: offline ({r.problem})")
                self._tell(r.key, False)
            return
        if was is not True:
            self.online[r.key] = True
            if was is False:
                w.note(r.time, "online", "answers again")
            self.say(f"{r.key}: online")
            self._tell(r.key, True)
        if r.data.get("time") == 0 or "no_data" in (r.data.get("status") or ()):
            return  # a meter that has not measured its first second yet
        d = r.data if r.data.get("time") is not None else {**r.data, "time": r.time}
        snap = snapshot_from_dict(d, self.names[r.key])
        if d.get("model") and self.models.get(r.key) != d["model"]:
            self.models[r.key] = d["model"]
            self.store.meter_id(r.key, d["model"])
        self.readings += 1
        before = w.written_until
        w.add(frame_from_snapshot(snap))
        if w.written_until != before:
            log.info("history of %s written up to %s", r.key, time.strftime(
                "%H:%M:%S", time.localtime(w.written_until or 0)))
        for listener in self.listeners:
            try:
                listener(r.key, snap)
            except Exception:
                log.exception("hub listener failed")

    def _tell(self, key: str, online: bool) -> None:
        for watcher in self.watchers:
            try:
                watcher(key, online)
            except Exception:
                log.exception("hub watcher failed")
