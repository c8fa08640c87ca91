"""Modbus TCP server (PM-4324-MTCP): MBAP framing over asyncio, many clients at once.

Why our own server rather than pymodbus's: see ``pdu.py`` (unit-id bug, datastore churn,
speed). This module uses ``asyncio.Protocol`` callbacks, not streams: the request path is
one ``data_received`` call with no task switch, measurably faster (see bench/modbus_bench.py).

MBAP rules (Modbus Messaging on TCP/IP Implementation Guide V1.0b §3.1.3 / §4.4):

* the length field counts the unit id and the PDU, so it must be 2..254. Outside that range
  the byte stream cannot be resynchronised and the connection is closed;
* a frame with a protocol id other than 0, or whose length does not match what its function
  code requires, is dropped without an answer (the connection stays open);
* several requests in one segment, and one request split over several, are both fine; a
  client may pipeline, and answers go out in order.

Unit ids. One meter (``backend``, ``unit_id``): its address is served, and so are 0 and 255.
A TCP client reaches the meter by its IP address, and clients and gateways use 255
(libmodbus's TCP default) or 0 for "the device itself"; on TCP, 0 is *not* a broadcast and
gets an answer. Several meters (``backends={unit: backend}``): the server is a gateway, like
an RS-485-to-Ethernet gateway with meters on its line, and serves exactly those unit ids (0
and 255 are no meter there). Either way any other unit id gets exception 0x0B ("gateway
target device failed to respond"): that is what real gateways answer for a unit that does
not reply on their line (ICP DAS tGW-700/GW-2200 manual, "Defined Exception Codes"; Moxa
MGate likewise), only we answer at once instead of after a serial timeout, and it spares a
scanning client the timeout.

Hostile and broken clients (docs/modbus.md; bench/modbus_attack.py measures them):

* **Fairness**: one callback serves at most ``requests_per_turn`` requests of a connection;
  the rest wait for the next turn of the event loop (reading from that client paused
  meanwhile), so a client that pipelines thousands of requests gets the same share per turn
  as one that sends one at a time.
* **Writes** run in one worker thread (they may save the settings file, an fsync); the
  answer then waits in the loop (``Deferred``, at most ``ACK_WAIT_S``) until the state
  store's commit is on disk, so writes of other clients share that commit. That connection
  waits for its answer, every other one is served meanwhile.
* **Deadlines**: a frame must be complete ``frame_deadline_s`` after its first byte, and a
  connection with no complete request for ``idle_timeout_s`` is closed (half-open ones too).
* **Table full**: a new connection waits on probation (at most ``max_connections`` of
  them, the oldest dropped first) and, once it completes a request, evicts the connection
  idle the longest, those that never completed a request first; so a new client always
  gets in, while connections that never ask anything (slow-loris holders) cannot evict each
  other in a loop. A probation ends after ``frame_deadline_s``.
* **Silent connections** do not wake the server: the listening socket has TCP_DEFER_ACCEPT
  (Linux), so a connection is accepted only once its first bytes (or its close) arrive.
* **Slow readers**: once a client's unread answers pass ``write_high_water`` bytes in our send
  buffer, nothing more of it is read or served, and unless it takes its answers within
  ``frame_deadline_s`` it is dropped; the loop never waits on one socket. The kernel's send
  buffer of the connection is set to the same size (instead of growing to megabytes), so
  that happens after a few hundred unread answers, not tens of thousands served for nothing.
* Log lines about refused, evicted or timed-out connections are rate-limited.

Security (docs/security.md): each connection knows its ``Client`` (address; for TLS, the
certificate's subject and role, see tls.py) and serves its requests through
``backend.for_client(client, word_order)`` (made per unit id on its first request), so every
write reaches the guard with its sender and a listener may serve its own word order.
``access`` (access.py) admits client networks and limits connections and requests per client
address; ``ssl_context`` makes the listener a Modbus/TCP Security one.

Protocol faults (protocols/faults.py): ``faults`` (one meter's, or ``{unit: faults}`` for a
gateway) make the meter answer late, not at all, with an exception, with frozen values,
another transaction id, or in split or merged segments (tcp_faults.py).

The connection itself (framing, turns, deadlines, flow control) is in tcp_connection.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pm4324.protocols.faults import ProtocolFaults
from pm4324.protocols.modbus.access import SourceControl
from pm4324.protocols.modbus.tcp_connection import Connection, Route
from pm4324.protocols.modbus.tls import HANDSHAKE_TIMEOUT_S
from pm4324.registers.backend import RegisterBackend

__all__ = ["TcpServer", "parse_listen"]

log = logging.getLogger(__name__)

_DEVICE_ITSELF = (0, 255)
LOG_EVERY_S = 10.0  # at most one line per kind of connection trouble this often


def parse_listen(text: str) -> tuple[str, int]:
    """Parse ``--listen HOST:PORT`` ("127.0.0.1:5020", "[::1]:502", ":5020" = 127.0.0.1)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:5020")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class _RateLimitedLog:
    """One log line per ``every_s`` for one kind of event; the lines between are counted."""

    def __init__(self, level: int, every_s: float = LOG_EVERY_S):
        self.level = level
        self.every_s = every_s
        self._last = float("-inf")
        self._suppressed = 0

    def __call__(self, now: float, message: str, *args: Any) -> None:
        if now - self._last < self.every_s:
            self._suppressed += 1
            return
        if self._suppressed:
            message += f" ({self._suppressed} more like this in the last {self.every_s:g} s)"
        log.log(self.level, message, *args)
        self._last, self._suppressed = now, 0


class TcpServer:
    """Modbus TCP server over one ``RegisterBackend`` (one meter as ``unit_id``, also 0 and
    255), or over several as a gateway (``backends={unit_id: backend}``, ``backend=None``).

    ``port=0`` binds a free port; read the actual one from ``.port`` after ``start()``.
    ``unit_id`` may be changed while running; it applies to the next request.
    """

    def __init__(
        self,
        backend: RegisterBackend | None,
        unit_id: int = 1,
        host: str = "127.0.0.1",
        port: int = 5020,
        *,
        backends: Mapping[int, RegisterBackend] | None = None,
        faults: ProtocolFaults | Mapping[int, ProtocolFaults] | None = None,
        max_connections: int = 128,
        idle_timeout_s: float = 60.0,
        frame_deadline_s: float = 5.0,
        requests_per_turn: int = 4,
        write_high_water: int = 64 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        word_order: str | None = None,
        access: SourceControl | None = None,
    ):
        if (backend is None) == (backends is None):
            raise ValueError("give one backend (one meter) or backends={unit_id: backend}")
        if backends is not None:
            if not backends:
                raise ValueError("backends: no unit")
            bad = [u for u in backends if not 1 <= u <= 247]
            if bad:
                raise ValueError(f"unit ids {bad}: allowed 1..247")
        if not 1 <= unit_id <= 247:
            raise ValueError(f"unit_id {unit_id!r}: allowed 1..247")
        if isinstance(faults, ProtocolFaults) == (backends is not None) and faults is not None:
            raise ValueError("faults: one ProtocolFaults for one meter, {unit_id: "
                             "ProtocolFaults} for a gateway")
        if max_connections < 1 or idle_timeout_s <= 0 or frame_deadline_s <= 0:
            raise ValueError("max_connections must be >= 1, idle_timeout_s and "
                             "frame_deadline_s > 0")
        if requests_per_turn < 1:
            raise ValueError("requests_per_turn must be >= 1")
        self.backend = backend
        self.backends = dict(backends) if backends is not None else None
        self.faults = faults  # protocol faults (faults.py): of the meter, or per unit
        self.faults_applied: Counter[str] = Counter()  # requests each kind of fault hit
        self._unit_id = unit_id
        self.host = host
        self._port = port
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.frame_deadline_s = frame_deadline_s
        self.requests_per_turn = requests_per_turn
        self.write_high_water = write_high_water
        self.ssl_context = ssl_context
        self.word_order = word_order  # None: the meter's word order setting
        self.access = access
        self.refused = 0  # connections ``access`` did not admit
        self.evicted = 0  # idle connections closed to make room for a new one
        self.timed_out = 0  # idle timeouts and frames not completed in time
        self.bad_frames = 0
        self.stalls = 0  # times a client's unread answers reached write_high_water
        self.slow_readers_dropped = 0  # clients dropped for not reading their answers in time
        self.probation_dropped = 0  # waiting for room, dropped for a newer one
        self._targets: dict[int, Route] = {}  # unit id -> (backend, faults), see _reroute
        self._connections: set[Connection] = set()
        self._waiting: dict[Connection, None] = {}  # on probation, oldest first
        self._server: asyncio.Server | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by start
        self._log_evict = _RateLimitedLog(logging.WARNING)
        self._log_refused = _RateLimitedLog(logging.WARNING)
        self._log_timeout = _RateLimitedLog(logging.INFO)
        self._log_drop = _RateLimitedLog(logging.WARNING)
        self._log_bad = _RateLimitedLog(logging.INFO)
        self._reroute()

    @property
    def unit_id(self) -> int:
        """The one meter's unit id (unused by a gateway)."""
        return self._unit_id

    @unit_id.setter
    def unit_id(self, unit_id: int) -> None:
        if not 1 <= unit_id <= 247:
            raise ValueError(f"unit_id {unit_id!r}: allowed 1..247")
        self._unit_id = unit_id
        self._reroute()

    def _reroute(self) -> None:
        """Which unit ids lead to which meter; connections look them up again."""
        faults = self.faults
        if self.backends is not None:
            per_unit = faults if isinstance(faults, Mapping) else {}
            self._targets = {u: (b, per_unit.get(u)) for u, b in self.backends.items()}
        else:
            assert self.backend is not None
            one = faults if isinstance(faults, ProtocolFaults) else None
            self._targets = {u: (self.backend, one) for u in (self._unit_id, *_DEVICE_ITSELF)}
        for conn in self._connections:
            conn.forget_routes()

    def count_fault(self, kind: str) -> None:
        self.faults_applied[kind] += 1

    @property
    def port(self) -> int:
        """The bound port (the OS's choice when 0 was given)."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    @property
    def connections(self) -> int:
        return len(self._connections)

    def _units_text(self) -> str:
        if self.backends is None:
            return f"unit {self._unit_id}"
        units = sorted(self.backends)
        if units == list(range(units[0], units[-1] + 1)) and len(units) > 2:
            return f"gateway, units {units[0]}..{units[-1]}"
        return "gateway, units " + ", ".join(map(str, units))

    async def start(self) -> None:
        if self._server is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="modbus-tcp-write")
        self._server = await self._loop.create_server(
            lambda: Connection(self), self.host, self._port, reuse_address=True, backlog=256,
            ssl=self.ssl_context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if self.ssl_context else None,
        )
        defer = getattr(socket, "TCP_DEFER_ACCEPT", None)
        for sock in self._server.sockets if defer is not None else ():
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, defer, max(1, math.ceil(self.frame_deadline_s)))
        log.info("Modbus %s (%s) listening on %s:%d", "TLS" if self.ssl_context else "TCP",
                 self._units_text(), self.host, self.port)

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is None:
            return
        self._server.close()
        for conn in [*self._connections, *self._waiting]:
            conn.abort()
        await self._server.wait_closed()
        self._server = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await asyncio.to_thread(writer.shutdown, wait=True)

    async def serve_forever(self) -> None:
        await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            await self.stop()

    async def __aenter__(self) -> TcpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _wait_for_room(self, conn: Connection) -> None:
        """A connection on probation; past ``max_connections`` of them the oldest goes."""
        self._waiting[conn] = None
        if len(self._waiting) > self.max_connections:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            self.probation_dropped += 1
            self._log_evict(self._loop.time(), "Modbus TCP: %d connections waiting for room; "
                            "closing %s, the oldest", self.max_connections, oldest.peer)
            oldest.abort()

    def _evict_one(self) -> None:
        """Make room for a new connection by closing the one idle the longest."""
        victim = min(self._connections, key=Connection.idle_rank)
        self._connections.discard(victim)
        self.evicted += 1
        self._log_evict(self._loop.time(), "Modbus TCP: %d connections; closing %s, idle the "
                        "longest, for a new one", self.max_connections, victim.peer)
        victim.abort()
