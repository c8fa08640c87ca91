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

Robustness: every connection has an idle timeout (nothing received for ``idle_timeout_s``
closes it, which also reaps half-open connections); beyond ``max_connections`` a new
connection is closed at once; a client that stops reading fills our write buffer up to
``write_high_water`` bytes, then we stop reading its requests, and if it does not drain for
``idle_timeout_s`` it is aborted. Nothing a client does blocks the others: the loop never
waits on one socket.

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
import ssl
import struct
from typing import cast

from pm4324.protocols.modbus.access import SourceControl
from pm4324.protocols.modbus.pdu import (
    GATEWAY_TARGET_FAILED,
    SERVER_BUSY,
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


def parse_listen(text: str) -> tuple[str, int]:
    """Parse ``--listen HOST:PORT`` ("127.0.0.1:5020", "[::1]:502", ":5020" = 127.0.0.1)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:5020")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class _Connection(asyncio.Protocol):
    """One client connection; all the work happens in ``data_received``."""

    __slots__ = ("_server", "_transport", "_rest", "_last_rx", "_timer", "_stalled_since",
                 "_backend", "_host")

    def __init__(self, server: TcpServer):
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._rest = b""
        self._last_rx = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._stalled_since: float | None = None
        self._backend: RegisterBackend = server.backend
        self._host: str | None = None  # set once admitted by ``server.access``

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's transports do not subclass asyncio.Transport.
        transport = cast(asyncio.Transport, transport)
        server = self._server
        if len(server._connections) >= server.max_connections:
            server.refused += 1
            log.warning("Modbus TCP: connection limit %d reached; refusing %s",
                        server.max_connections, transport.get_extra_info("peername"))
            transport.abort()
            return
        client = client_of(transport)
        loop = server._loop
        if server.access is not None:
            if not server.access.open(client.host, loop.time()):
                log.warning("Modbus TCP: %s not admitted (allow-list or per-client connection"
                            " limit)", client.describe())
                transport.abort()
                return
            self._host = client.host
        for_client = getattr(server.backend, "for_client", None)
        if for_client is not None:
            self._backend = for_client(client, server.word_order)
        self._transport = transport
        server._connections.add(self)
        transport.set_write_buffer_limits(high=server.write_high_water)
        self._last_rx = loop.time()
        self._timer = loop.call_at(self._last_rx + server.idle_timeout_s, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        if self._host is not None and self._server.access is not None:
            self._server.access.close(self._host)
            self._host = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None

    def _check_idle(self) -> None:
        server = self._server
        now = server._loop.time()
        since = self._last_rx if self._stalled_since is None else self._stalled_since
        if now - since >= server.idle_timeout_s:
            self._timer = None
            server.timed_out += 1
            self.abort()
            return
        self._timer = server._loop.call_at(since + server.idle_timeout_s, self._check_idle)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests.
        self._stalled_since = self._server._loop.time()
        self._server.stalls += 1
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._stalled_since = None
        if self._transport is not None:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        server = self._server
        self._last_rx = server._loop.time()
        if self._rest:
            data = self._rest + data
            self._rest = b""
        end_all = len(data)
        pos = 0
        out: list[bytes] = []
        unpack = _MBAP.unpack_from
        while end_all - pos >= 7:
            tid, pid, length, unit = unpack(data, pos)
            if not 2 <= length <= 254:
                server.bad_frames += 1
                log.info("Modbus TCP: MBAP length %d; closing %s", length,
                         self._transport.get_extra_info("peername") if self._transport else "?")
                self.abort()
                return
            end = pos + 6 + length
            if end > end_all:
                break
            pdu = data[pos + 7:end]
            pos = end
            if pid != 0 or request_pdu_length(pdu) not in (None, len(pdu)):
                server.bad_frames += 1
                continue
            rsp = server._respond(unit, pdu, self._backend, self._host)
            if rsp is not None:
                out.append(_MBAP.pack(tid, 0, len(rsp) + 1, unit) + rsp)
        if pos < end_all:
            self._rest = data[pos:]  # at most one partial frame: < 261 bytes
        if out and self._transport is not None:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))


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
        write_high_water: int = 64 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        word_order: str | None = None,
        access: SourceControl | None = None,
    ):
        if not 1 <= unit_id <= 247:
            raise ValueError(f"unit_id {unit_id!r}: allowed 1..247")
        if max_connections < 1 or idle_timeout_s <= 0:
            raise ValueError("max_connections must be >= 1 and idle_timeout_s > 0")
        self.backend = backend
        self.unit_id = unit_id
        self.host = host
        self._port = port
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.write_high_water = write_high_water
        self.ssl_context = ssl_context
        self.word_order = word_order  # None: the meter's word order setting
        self.access = access
        self.refused = 0
        self.timed_out = 0
        self.bad_frames = 0
        self.stalls = 0  # times a client stopped reading and we paused reading from it
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by start

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

    def _respond(self, unit: int, pdu: bytes, backend: RegisterBackend,
                 host: str | None) -> bytes | None:
        """One request of a connection: ``backend`` is the client's view, ``host`` its address
        as admitted by ``access`` (None: not rate-limited)."""
        if unit == self.unit_id or unit in _DEVICE_ITSELF:
            if host is not None and self.access is not None \
                    and not self.access.request(host, self._loop.time()):
                return exception_pdu(pdu[0], SERVER_BUSY) if 0 < pdu[0] < 0x80 else None
            return handle_pdu(backend, pdu)
        fc = pdu[0]
        if fc == 0 or fc >= 0x80:
            return None
        return exception_pdu(fc, GATEWAY_TARGET_FAILED)
