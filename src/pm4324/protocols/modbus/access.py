"""Per-listener source control: which client networks may connect, and how much each client
address may ask (connections open at once, new connections per second, requests per second).

Why per address and not per connection: a client that opens many connections, or reconnects
in a loop, is still one client. Both rates are token buckets with a burst of one second's
worth. A connection over a limit is closed at once; a request over the rate is answered with
exception 06 (server device busy), which costs less than serving it and tells an honest
master to slow down. Counters say how often each limit bit (docs/security.md).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pm4324.config.security_settings import ListenerAccess

MAX_TRACKED = 4096  # client addresses whose buckets are remembered (oldest idle ones dropped)


@dataclass
class _Bucket:
    tokens: float  # requests
    stamp: float
    connects: float  # new connections
    connect_stamp: float
    connections: int = 0  # open now


class SourceControl:
    """Admission and rate limits of one listener (thread-unsafe: one event loop)."""

    def __init__(self, access: ListenerAccess):
        self.access = access
        self._networks = [ipaddress.ip_network(n, strict=False) for n in access.allow]
        self._buckets: dict[str, _Bucket] = {}
        self.not_allowed = 0  # connections from outside the allow-list
        self.over_connections = 0  # past max_connections_per_client or max_connects_per_s
        self.over_rate = 0  # requests answered "busy"

    def allowed(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._networks)

    def open(self, host: str, now: float) -> bool:
        """A new connection from ``host``: admitted (and counted) or not."""
        if not self.allowed(host):
            self.not_allowed += 1
            return False
        bucket = self._bucket(host, now)
        rate = self.access.max_connects_per_s
        bucket.connects = min(rate, bucket.connects + (now - bucket.connect_stamp) * rate)
        bucket.connect_stamp = now
        if bucket.connections >= self.access.max_connections_per_client or bucket.connects < 1.0:
            self.over_connections += 1
            return False
        bucket.connects -= 1.0
        bucket.connections += 1
        return True

    def close(self, host: str) -> None:
        bucket = self._buckets.get(host)
        if bucket is not None:
            bucket.connections = max(0, bucket.connections - 1)

    def request(self, host: str, now: float) -> bool:
        """One request from ``host``: within its rate, or not."""
        bucket = self._bucket(host, now)
        rate = self.access.max_requests_per_s
        bucket.tokens = min(rate, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            self.over_rate += 1
            return False
        bucket.tokens -= 1.0
        return True

    def _bucket(self, host: str, now: float) -> _Bucket:
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED:
                self._forget_idle()
            a = self.access
            bucket = self._buckets[host] = _Bucket(a.max_requests_per_s, now,
                                                   max(1.0, a.max_connects_per_s), now)
        return bucket

    def _forget_idle(self) -> None:
        idle = [h for h, b in self._buckets.items() if b.connections == 0]
        for host in sorted(idle, key=lambda h: self._buckets[h].stamp)[: len(idle) // 2 + 1]:
            del self._buckets[host]
