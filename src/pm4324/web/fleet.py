"""The meters one web server shows: `run`'s own meter, or every meter of a hub.

Each meter's listener (any thread) records its newest snapshot and when it came; the hub
also says when a meter goes offline or comes back. The API, the Building page and /metrics
read them by the meter's key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pm4324.snapshot import Snapshot


@dataclass(frozen=True)
class Member:
    key: str
    snapshot: Snapshot | None
    last_seen: float | None  # Unix time the newest snapshot arrived
    online: bool


class Fleet:
    def __init__(self, keys: list[str]):
        self._lock = threading.Lock()
        self._members = {k: Member(k, None, None, False) for k in keys}

    @property
    def keys(self) -> list[str]:
        return list(self._members)

    def listener(self, key: str) -> Callable[[Snapshot], None]:
        return lambda snap: self.update(key, snap)

    def update(self, key: str, snap: Snapshot) -> None:
        with self._lock:
            self._members[key] = Member(key, snap, time.time(), True)

    def mark(self, key: str, online: bool) -> None:
        """The hub's word on a meter that stopped or resumed answering."""
        with self._lock:
            m = self._members[key]
            self._members[key] = Member(key, m.snapshot, m.last_seen, online)

    def get(self, key: str) -> Member | None:
        return self._members.get(key)

    def members(self) -> list[Member]:
        return list(self._members.values())
