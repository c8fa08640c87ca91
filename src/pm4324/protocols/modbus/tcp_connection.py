"""One Modbus TCP client connection of ``TcpServer`` (tcp.py): MBAP framing, fair turns,
deadlines, flow control, writes in the write thread, and the route of each request to the
meter its unit id names.

Why ``asyncio.Protocol`` callbacks, not streams: the request path is one ``data_received``
call with no task switch, measurably faster (bench/modbus_bench.py). The rules this follows
are in tcp.py's docstring.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, cast

from pm4324.protocols.modbus.pdu import (
    SERVER_BUSY,
    WRITE_FUNCTIONS,
    Deferred,
    durable_answer,
    exception_pdu,
    gateway_target_failed,
    handle_pdu,
    request_pdu_length,
)
from pm4324.protocols.modbus.tcp_faults import FaultyAnswers
from pm4324.protocols.modbus.tls import client_of
from pm4324.registers.backend import RegisterBackend
from pm4324.security.roles import Client

if TYPE_CHECKING:
    from pm4324.protocols.faults import ProtocolFaults
    from pm4324.protocols.modbus.tcp import TcpServer

log = logging.getLogger("pm4324.protocols.modbus.tcp")

MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id

# What a request's unit id leads to: this client's view of that meter, and its faults.
Route = tuple[RegisterBackend, "ProtocolFaults | None"]


class Connection(FaultyAnswers, asyncio.Protocol):
    """One client connection; requests are served from ``data_received`` and, past the
    per-turn budget, from callbacks scheduled on the loop."""

    __slots__ = ("_server", "_transport", "peer", "_rest", "_offset", "_last_request", "_served",
                 "_frame_start", "_timer", "_timer_at", "_backlog", "_writing", "_paused",
                 "_stalled_since", "_client", "_routes", "_host", "_held", "_held_timer",
                 "_probation")

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
        self._writing = False  # a write runs in the write thread, or a faulty answer waits
        self._paused = False  # reading paused by us (backlog, write in progress, stalled)
        self._stalled_since: float | None = None  # our send buffer is full since then
        self._client: Client | None = None
        self._routes: dict[int, Route] = {}  # unit id -> this client's view (``route``)
        self._host: str | None = None  # set once admitted by ``server.access``
        self._held = b""  # answers held back by a ``merge`` fault
        self._held_timer: asyncio.TimerHandle | None = None
        self._probation = False  # came when the table was full: in once it asks something

    # -- life cycle ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's transports do not subclass asyncio.Transport.
        transport = cast(asyncio.Transport, transport)
        server = self._server
        self.peer = transport.get_extra_info("peername")
        client = self._client = client_of(transport)
        loop = server._loop
        if server.access is not None:
            if not server.access.open(client.host, loop.time()):
                server.refused += 1
                server._log_refused(loop.time(), "Modbus TCP: %s not admitted (allow-list or "
                                    "per-client connection limit)", client.describe())
                transport.abort()
                return
            self._host = client.host
        self._transport = transport
        if len(server._connections) >= server.max_connections:
            # Table full: no room is made until this client completes a request (``_admit``),
            # so connections that never ask anything cannot evict each other in a loop.
            self._probation = True
            server._wait_for_room(self)
        else:
            server._connections.add(self)
        transport.set_write_buffer_limits(high=server.write_high_water)
        sock = transport.get_extra_info("socket")
        if sock is not None:  # a small kernel buffer too: a non-reader is found in kilobytes
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, server.write_high_water)
        self._last_request = server._loop.time()
        self._arm(self._last_request + server.idle_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        self._server._waiting.pop(self, None)
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

    def _admit(self) -> None:
        """On probation and a request is complete: make room (evicting the connection idle
        the longest, never-served ones first) and join the table."""
        server = self._server
        server._waiting.pop(self, None)
        self._probation = False
        if len(server._connections) >= server.max_connections:
            server._evict_one()
        server._connections.add(self)

    def _has_frame(self) -> bool:
        """A whole MBAP frame (or an impossible length, which _serve refuses) is buffered."""
        data, pos = self._rest, self._offset
        if len(data) - pos < 7:
            return False
        return len(data) - pos >= 6 + int.from_bytes(data[pos + 4:pos + 6], "big")

    def forget_routes(self) -> None:
        """The server's units changed: look each one up again on its next request."""
        self._routes = {}

    def route(self, unit: int) -> Route | None:
        """This client's view of the meter behind ``unit`` (None: nobody serves it); made
        once per unit and connection, so a write reaches the guard with its sender and a
        listener serves its own word order."""
        target = self._server._targets.get(unit)
        if target is None:
            return None
        backend, faults = target
        for_client = getattr(backend, "for_client", None)
        if for_client is not None and self._client is not None:
            backend = for_client(self._client, self._server.word_order)
        route = self._routes[unit] = (backend, faults)
        return route

    # -- deadlines -------------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._server._loop.call_at(when, self._check_deadlines)

    def _deadline(self) -> float:
        server = self._server
        when = self._last_request + server.idle_timeout_s
        if self._probation:  # waiting for room: a request soon, or out
            when = min(when, self._last_request + server.frame_deadline_s)
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
        if self._probation and self._has_frame():
            self._admit()
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
        unpack = _unpack
        routes = self._routes
        host = self._host
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
            route = routes.get(unit) or self.route(unit)
            if route is None:
                rsp = gateway_target_failed(pdu)
            elif host is not None and not server.access.request(  # type: ignore[union-attr]
                    host, server._loop.time()):
                fc = pdu[0]
                rsp = exception_pdu(fc, SERVER_BUSY) if 0 < fc < 0x80 else None
            elif (route[1] is not None and route[1].current) or \
                    (pdu[0] in WRITE_FUNCTIONS and server._writer is not None):
                self._offset = pos
                self._frame_start = None
                self._flush(out)
                self._start(tid, unit, pdu, route)
                return
            else:
                rsp = durable_answer(handle_pdu(route[0], pdu))
            if rsp is not None:
                out.append(MBAP.pack(tid, 0, len(rsp) + 1, unit) + rsp)
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
        if self._held:  # a merge fault held answers back: they go first, in one segment
            out.insert(0, self._take_held())
        if out and self._transport is not None:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _start(self, tid: int, unit: int, pdu: bytes, route: Route) -> None:
        """Serve one request this connection waits for: a write (in the write thread), or
        any request while its meter has a protocol fault."""
        server = self._server
        self._writing = True
        self._pause()
        backend, faults = route
        if faults is not None and faults.current:
            rsp, done = self._faulty(pdu, backend, faults)
            if done:
                self._deliver(tid, unit, rsp, faults)
                return
        loop = server._loop
        future = server._writer.submit(_after_a_turn, loop, backend, pdu)  # type: ignore[union-attr]

        def finished(f: Future) -> None:
            try:
                loop.call_soon_threadsafe(self._write_done, tid, unit, f, faults)
            except RuntimeError:  # the loop closed while the write ran: nobody to answer
                pass

        future.add_done_callback(finished)

    def _write_done(self, tid: int, unit: int, future: Future,
                    faults: ProtocolFaults | None) -> None:
        try:
            rsp = future.result()
        except Exception:  # handle_pdu answers 04 itself; this is the thread pool failing
            log.exception("Modbus TCP: write request failed")
            rsp = None
        if isinstance(rsp, Deferred):
            # applied; its commit runs: wait for it here (≤ ACK_WAIT_S), not in the write
            # thread, so other clients' writes meanwhile share the next commit. This
            # connection stays paused: its answers stay in order.
            rsp.send_when_durable(self._server._loop,
                                  lambda a: self._deliver(tid, unit, a, faults))
            return
        self._deliver(tid, unit, rsp, faults)

    @staticmethod
    def _frame(tid: int, unit: int, rsp: bytes) -> bytes:
        return MBAP.pack(tid, 0, len(rsp) + 1, unit) + rsp

    def _finish(self, frame: bytes | None) -> None:
        """Send the awaited answer (None: none) and go on serving this connection."""
        self._writing = False
        self._last_request = self._server._loop.time()
        if self._transport is None:
            return
        if frame is not None:
            self._flush([frame])
        self._serve()


_unpack = MBAP.unpack_from
TURN_WAIT_S = 0.05  # the most a write waits for the loop's turn (a stopped loop: not at all)


def _after_a_turn(loop: asyncio.AbstractEventLoop, backend: RegisterBackend, pdu: bytes
                  ) -> bytes | Deferred | None:
    """``handle_pdu`` in the write thread, once the loop has gone through one turn.

    Why: a write holds the GIL for ~0.5 ms of Python, and a read that arrives meanwhile waits
    for it (and for the other threads that take the GIL first). Under a storm of writes the
    write thread was always busy; now it starts the next write only after the loop has
    served what was already waiting, reads included (docs/benchmarks.md, "Modbus TCP under
    attack")."""
    turn = threading.Event()
    try:
        loop.call_soon_threadsafe(turn.set)
    except RuntimeError:  # the loop is closed: nothing to give way to
        turn.set()
    turn.wait(TURN_WAIT_S)
    return handle_pdu(backend, pdu)
