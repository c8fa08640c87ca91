"""The per-second feed: the device loop publishes each snapshot here, the HTTP side reads it.

The meter calls listeners in its own loop's thread; ``publish`` hands the snapshot to the
server's event loop, where every stream client waits on one ``asyncio.Event`` per second.
The JSON of a second is encoded once, however many dashboards are open.
"""

from __future__ import annotations

import asyncio
import json

from pm4324.snapshot import Snapshot
from pm4324.web.views import live_view


class Feed:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self.snapshot: Snapshot | None = None
        self._tick = asyncio.Event()
        self._json: tuple[int, bytes] | None = None

    def publish(self, snap: Snapshot) -> None:
        """The meter's listener (any thread)."""
        self._loop.call_soon_threadsafe(self._set, snap)

    def _set(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.wake()

    def wake(self) -> None:
        """Release every waiting stream (a new second, or the server is closing)."""
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    def live_json(self) -> bytes | None:
        """The dashboard's JSON of the newest second, encoded once per second."""
        snap = self.snapshot
        if snap is None:
            return None
        if self._json is None or self._json[0] != snap.seq:
            self._json = (snap.seq, json.dumps(live_view(snap), separators=(",", ":")).encode())
        return self._json[1]

    async def next(self, timeout: float) -> bool:
        """Wait for the next second; False when ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._tick.wait(), timeout)
        except TimeoutError:
            return False
        return True
