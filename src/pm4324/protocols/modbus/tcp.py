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

Unit id: the configured address is served, and so are 0 and 255. A TCP client reaches the
meter by its IP address, and clients and gateways use 255 (libmodbus's TCP default) or 0 for
"the device itself"; on TCP, 0 is *not* a broadcast and gets an answer. Any other unit id gets
exception 0x0B ("gateway target device failed to respond"): TCP has no shared bus to keep
quiet on, and a prompt, explicit "no such unit" spares a scanning client a timeout.

Hostile and broken clients (docs/modbus.md; bench/modbus_attack.py measures them):

* **Fairness**: one callback serves at most ``requests_per_turn`` requests of a connection;
  the rest wait for the next turn of the event loop (reading from that client paused
  meanwhile), so a client that pipelines thousands of requests gets the same share per turn
  as one that sends one at a time.
* **Writes** run in one worker thread (they may save the settings file and the state store,
  an fsync each); that connection waits for its answer, every other one is served meanwhile.
* **Deadlines**: a frame must be complete ``frame_deadline_s`` after its first byte, and a
  connection with no complete request for ``idle_timeout_s`` is closed (half-open ones too).
* **Table full**: a new connection evicts the connection idle the longest, those that never
  completed a request first, so a new client always gets in.
* **Slow readers**: once a client's unread answers pass ``write_high_water`` bytes in our send
  buffer, nothing more of it is read or served, and unless it takes its answers within
  ``frame_deadline_s`` it is dropped; the loop never waits on one socket. The kernel's send
  buffer of the connection is set to the same size (instead of growing to megabytes), so
  that happens after a few hundred unread answers, not tens of thousands served for nothing.
* Log lines about refused, evicted or timed-out connections are rate-limited.

Security (docs/security.md): each connection knows its ``Client`` (address; for TLS, the
certificate's subject and role, see tls.py) and serves its requests through
``backend.for_client(client, word_order)``, so every write reaches the guard with its sender
and a listener may serve its own word order. ``access`` (access.py) admits client networks
and limits connections and requests per client address; ``ssl_context`` makes the listener
a Modbus/TCP Security one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

from pm4324.protocols.modbus.access import SourceControl
from pm4324.protocols.modbus.pdu import (
    GATEWAY_TARGET_FAILED,
    SERVER_BUSY,
    WRITE_FUNCTIONS,
    exception_pdu,
    handle_pdu,
    request_pdu_length,
)
from pm4324.protocols.modbus.tls import HANDSHAKE_TIMEOUT_S, client_of
from pm4324.registers.backend import RegisterBackend

__all__ = ["TcpServer", "parse_listen"]

log = logging.getLogger(__name__)

_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id
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


class _Connection(asyncio.Protocol):
    """One client connection; requests are served from ``data_received`` and, past the
    per-turn budget, from callbacks scheduled on the loop."""

    __slots__ = ("_server", "_transport", "peer", "_rest", "_offset", "_last_request", "_served",
                 "_frame_start", "_timer", "_timer_at", "_backlog", "_writing", "_paused",
                 "_stalled_since", "_backend", "_host")

    def __init__(self, server: TcpServer):
        self._server = server
        self._transport: asyncio.Transport | None = None
        self.peer: Any = None  # (host, port) of the client: who a log line or a write came from
        self._rest = b""  # received bytes not yet served: partial frame, or the backlog
        self._offset = 0  # where the unserved bytes of ``_rest`` start (no copy per turn)
        self._last_request = 0.0  # connect time, then the time of the last complete request
        self._served = False  # completed a request at least once
        self._frame_start: float | None = None  # first byte of the pending partial frame
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._backlog = False  # a turn is scheduled to serve more of ``_rest``
        self._writing = False  # a write is running in the write thread
        self._paused = False  # reading paused by us (backlog, write in progress, stalled)
        self._stalled_since: float | None = None  # our send buffer is full since then
        self._backend: RegisterBackend = server.backend  # this client's view (for_client)
        self._host: str | None = None  # set once admitted by ``server.access``

    # -- life cycle ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's transports do not subclass asyncio.Transport.
        transport = cast(asyncio.Transport, transport)
        server = self._server
        self.peer = transport.get_extra_info("peername")
        client = client_of(transport)
        loop = server._loop
        if server.access is not None:
            if not server.access.open(client.host, loop.time()):
                server.refused += 1
                server._log_refused(loop.time(), "Modbus TCP: %s not admitted (allow-list or "
                                    "per-client connection limit)", client.describe())
                transport.abort()
                return
            self._host = client.host
        for_client = getattr(server.backend, "for_client", None)
        if for_client is not None:
            self._backend = for_client(client, server.word_order)
        if len(server._connections) >= server.max_connections:
            server._evict_one()
        self._transport = transport
        server._connections.add(self)
        transport.set_write_buffer_limits(high=server.write_high_water)
        sock = transport.get_extra_info("socket")
        if sock is not None:  # a small kernel buffer too: a non-reader is found in kilobytes
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, server.write_high_water)
        self._last_request = server._loop.time()
        self._arm(self._last_request + server.idle_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        if self._host is not None and self._server.access is not None:
            self._server.access.close(self._host)
            self._host = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def idle_rank(self) -> tuple[bool, float]:
        """Eviction order: never served a request first, then the longest idle."""
        return self._served, self._last_request

    # -- deadlines -------------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._server._loop.call_at(when, self._check_deadlines)

    def _deadline(self) -> float:
        server = self._server
        when = self._last_request + server.idle_timeout_s
        for start in (self._frame_start, self._stalled_since):
            if start is not None:
                when = min(when, start + server.frame_deadline_s)
        return when

    def _check_deadlines(self) -> None:
        self._timer = None
        server = self._server
        now = server._loop.time()
        if self._writing:  # our own write thread is slow, not the client
            self._arm(now + server.frame_deadline_s)
            return
        if now < self._deadline():
            self._arm(self._deadline())
            return
        if self._stalled_since is not None and now >= self._stalled_since + server.frame_deadline_s:
            server.slow_readers_dropped += 1
            server._log_drop(now, "Modbus TCP: %s does not read its answers; dropping it",
                             self.peer)
        else:
            late_frame = self._frame_start is not None and \
                now >= self._frame_start + server.frame_deadline_s
            server.timed_out += 1
            server._log_timeout(now, "Modbus TCP: %s from %s; closing",
                                "frame incomplete" if late_frame else "idle", self.peer)
        self.abort()

    # -- flow control ----------------------------------------------------------------------

    def pause_writing(self) -> None:
        # Our send buffer passed the high-water mark, so the kernel's is full too: serve and
        # read nothing more of this client (it costs nothing meanwhile), and drop it unless
        # it takes its answers within the frame deadline.
        server = self._server
        server.stalls += 1
        now = self._stalled_since = server._loop.time()
        self._pause()
        if self._timer_at > now + server.frame_deadline_s:
            self._arm(now + server.frame_deadline_s)

    def resume_writing(self) -> None:
        self._stalled_since = None
        if not (self._backlog or self._writing) and self._transport is not None:
            self._serve()

    def _pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def _resume(self) -> None:
        if self._paused and self._stalled_since is None and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    # -- requests --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._offset:
            self._rest, self._offset = self._rest[self._offset:], 0
        self._rest = self._rest + data if self._rest else data
        if not (self._backlog or self._writing):
            self._serve()

    def _serve_turn(self) -> None:
        self._backlog = False
        if self._transport is not None and not self._writing:
            self._serve()

    def _serve(self) -> None:
        """Serve up to ``requests_per_turn`` complete frames from ``_rest``."""
        if self._stalled_since is not None:  # resume_writing serves the rest
            return
        server = self._server
        data = self._rest
        end_all = len(data)
        pos = self._offset
        budget = server.requests_per_turn
        out: list[bytes] = []
        unpack = _MBAP.unpack_from
        while end_all - pos >= 7:
            tid, pid, length, unit = unpack(data, pos)
            if not 2 <= length <= 254:
                server.bad_frames += 1
                server._log_bad(server._loop.time(), "Modbus TCP: MBAP length %d from %s; "
                                "closing", length, self.peer)
                self.abort()
                return
            end = pos + 6 + length
            if end > end_all:
                break
            if budget == 0:  # more complete frames than this turn may serve
                self._offset = pos
                self._last_request = server._loop.time()
                self._frame_start = None
                self._flush(out)
                self._pause()
                self._backlog = True
                server._loop.call_soon(self._serve_turn)
                return
            pdu = data[pos + 7:end]
            pos = end
            budget -= 1
            self._served = True
            if pid != 0 or request_pdu_length(pdu) not in (None, len(pdu)):
                server.bad_frames += 1
                continue
            done, rsp = server._early(unit, pdu, self._host)
            if not done and pdu[0] in WRITE_FUNCTIONS and server._writer is not None:
                self._offset = pos
                self._frame_start = None
                self._flush(out)
                self._start_write(tid, unit, pdu)
                return
            if not done:
                rsp = handle_pdu(self._backend, pdu)
            if rsp is not None:
                out.append(_MBAP.pack(tid, 0, len(rsp) + 1, unit) + rsp)
        completed = pos > self._offset
        self._rest = data[pos:] if pos < end_all else b""  # at most one partial frame here
        self._offset = 0
        self._flush(out)
        self._resume()
        if completed:  # a frame was completed: the deadline of the next one starts now
            self._last_request = server._loop.time()
            self._frame_start = None
        if self._rest and self._frame_start is None:
            now = self._frame_start = server._loop.time()
            if self._timer_at > now + server.frame_deadline_s:
                self._arm(now + server.frame_deadline_s)

    def _flush(self, out: list[bytes]) -> None:
        if out and self._transport is not None:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _start_write(self, tid: int, unit: int, pdu: bytes) -> None:
        """Run one write request in the write thread; this connection waits for it."""
        server = self._server
        self._writing = True
        self._pause()
        future = server._writer.submit(handle_pdu, self._backend, pdu)  # type: ignore[union-attr]
        loop = server._loop

        def done(f: Future) -> None:
            try:
                loop.call_soon_threadsafe(self._write_done, tid, unit, f)
            except RuntimeError:  # the loop closed while the write ran: nobody to answer
                pass

        future.add_done_callback(done)

    def _write_done(self, tid: int, unit: int, future: Future) -> None:
        self._writing = False
        self._last_request = self._server._loop.time()
        try:
            rsp = future.result()
        except Exception:  # handle_pdu answers 04 itself; this is the thread pool failing
            log.exception("Modbus TCP: write request failed")
            rsp = None
        if rsp is not None and self._transport is not None:
            self._transport.write(_MBAP.pack(tid, 0, len(rsp) + 1, unit) + rsp)
        if self._transport is not None:
            self._serve()


class TcpServer:
    """Modbus TCP server over a ``RegisterBackend``.

    ``port=0`` binds a free port; read the actual one from ``.port`` after ``start()``.
    ``unit_id`` may be changed while running; it applies to the next request.
    """

    def __init__(
        self,
        backend: RegisterBackend,
        unit_id: int = 1,
        host: str = "127.0.0.1",
        port: int = 5020,
        *,
        max_connections: int = 128,
        idle_timeout_s: float = 60.0,
        frame_deadline_s: float = 5.0,
        requests_per_turn: int = 4,
        write_high_water: int = 64 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        word_order: str | None = None,
        access: SourceControl | None = None,
    ):
        if not 1 <= unit_id <= 247:
            raise ValueError(f"unit_id {unit_id!r}: allowed 1..247")
        if max_connections < 1 or idle_timeout_s <= 0 or frame_deadline_s <= 0:
            raise ValueError("max_connections must be >= 1, idle_timeout_s and "
                             "frame_deadline_s > 0")
        if requests_per_turn < 1:
            raise ValueError("requests_per_turn must be >= 1")
        self.backend = backend
        self.unit_id = unit_id
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
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by start
        self._log_evict = _RateLimitedLog(logging.WARNING)
        self._log_refused = _RateLimitedLog(logging.WARNING)
        self._log_timeout = _RateLimitedLog(logging.INFO)
        self._log_drop = _RateLimitedLog(logging.WARNING)
        self._log_bad = _RateLimitedLog(logging.INFO)

    @property
    def port(self) -> int:
        """The bound port (the OS's choice when 0 was given)."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        if self._server is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="modbus-tcp-write")
        self._server = await self._loop.create_server(
            lambda: _Connection(self), self.host, self._port, reuse_address=True, backlog=256,
            ssl=self.ssl_context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if self.ssl_context else None,
        )
        log.info("Modbus %s unit %d listening on %s:%d", "TLS" if self.ssl_context else "TCP",
                 self.unit_id, self.host, self.port)

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is None:
            return
        self._server.close()
        for conn in list(self._connections):
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

    def _evict_one(self) -> None:
        """Make room for a new connection by closing the one idle the longest."""
        victim = min(self._connections, key=_Connection.idle_rank)
        self._connections.discard(victim)
        self.evicted += 1
        self._log_evict(self._loop.time(), "Modbus TCP: %d connections; closing %s, idle the "
                        "longest, for a new one", self.max_connections, victim.peer)
        victim.abort()

    def _early(self, unit: int, pdu: bytes, host: str | None) -> tuple[bool, bytes | None]:
        """(True, answer) when a request is answered without the backend: another unit id,
        or over its client's request rate (``host`` as admitted by ``access``; None: not
        rate-limited); (False, None) when the backend serves it."""
        fc = pdu[0]
        if unit == self.unit_id or unit in _DEVICE_ITSELF:
            if host is not None and self.access is not None \
                    and not self.access.request(host, self._loop.time()):
                return True, exception_pdu(fc, SERVER_BUSY) if 0 < fc < 0x80 else None
            return False, None
        return True, None if fc == 0 or fc >= 0x80 else exception_pdu(fc, GATEWAY_TARGET_FAILED)
