"""How a TCP connection answers while its meter has protocol faults (protocols/faults.py):
the decision per request (offline, no answer, an exception, frozen values) and the delivery
of the answer (late, with another transaction id, split in two segments, or merged with the
next answer). A mixin of ``tcp_connection.Connection``, kept apart so the fault-free path
there stays short; only requests of a meter with an active fault come here.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pm4324.protocols.modbus.pdu import (
    WRITE_FUNCTIONS,
    durable_answer,
    exception_pdu,
    gateway_target_failed,
    handle_pdu,
)
from pm4324.registers.backend import RegisterBackend

if TYPE_CHECKING:
    from pm4324.protocols.faults import ProtocolFaults
    from pm4324.protocols.modbus.tcp import TcpServer


class FaultyAnswers:
    """The fault handling of a connection (state in ``Connection``'s slots)."""

    __slots__ = ()

    _server: TcpServer
    _transport: asyncio.Transport | None
    _held: bytes
    _held_timer: asyncio.TimerHandle | None

    def _frame(self, tid: int, unit: int, rsp: bytes) -> bytes:
        raise NotImplementedError

    def _finish(self, frame: bytes | None) -> None:
        raise NotImplementedError

    def _flush(self, out: list[bytes]) -> None:
        raise NotImplementedError

    def _faulty(self, pdu: bytes, backend: RegisterBackend,
                faults: ProtocolFaults) -> tuple[bytes | None, bool]:
        """(answer, True) as the faults decide it, or (None, False): a write to run in the
        write thread (its answer then suffers the faults in ``_deliver``)."""
        server = self._server
        current, fc = faults.current, pdu[0]
        if "offline" in current:  # a gateway says its target is gone; a meter is silent
            server.count_fault("offline")
            return (gateway_target_failed(pdu) if server.backends is not None else None), True
        if faults.hit("no_answer"):
            server.count_fault("no_answer")
            return None, True
        if faults.hit("exception"):
            server.count_fault("exception")
            code = int(current["exception"]["code"])
            return (exception_pdu(fc, code) if 0 < fc < 0x80 else None), True
        if fc in WRITE_FUNCTIONS and server._writer is not None:
            return None, False
        if "stale" in current and fc not in WRITE_FUNCTIONS:
            server.count_fault("stale")
            key = (server.word_order, pdu)
            return faults.frozen(key, lambda: durable_answer(handle_pdu(backend, pdu))), True
        return durable_answer(handle_pdu(backend, pdu)), True

    def _deliver(self, tid: int, unit: int, rsp: bytes | None,
                 faults: ProtocolFaults | None) -> None:
        """Send an answer this connection waited for, as the meter's faults (if any) say:
        late, with another transaction id, split in two, or merged with the next one."""
        if faults is None or not faults.current:  # none (any more): at once, as always
            self._finish(None if rsp is None else self._frame(tid, unit, rsp))
            return
        if rsp is None:  # the next turn: no recursion into _serve (pipelined requests)
            self._server._loop.call_soon(self._finish, None)
            return
        loop, server, current = self._server._loop, self._server, faults.current
        if faults.hit("wrong_tid"):
            server.count_fault("wrong_tid")
            tid = (tid + 1) & 0xFFFF
        frame = self._frame(tid, unit, rsp)
        delay = faults.delay_s()
        if delay:
            server.count_fault("latency")
        if "split" in current:
            server.count_fault("split")
            half = len(frame) // 2
            loop.call_later(delay, self._write_part, frame[:half])
            loop.call_later(delay + current["split"]["gap_ms"] / 1e3, self._finish,
                            frame[half:])
        elif "merge" in current:
            server.count_fault("merge")
            loop.call_later(delay, self._hold, frame, current["merge"]["window_ms"] / 1e3)
        else:
            loop.call_later(delay, self._finish, frame)

    def _write_part(self, part: bytes) -> None:
        if self._transport is not None:
            self._transport.write(part)

    def _hold(self, frame: bytes, window_s: float) -> None:
        """Merge fault: keep the answer until the next one (or ``window_s``) and send both
        in one segment; meanwhile this connection is served on."""
        self._held += frame
        if self._held_timer is None:
            self._held_timer = self._server._loop.call_later(window_s, self._flush, [])
        else:  # the second answer: both go out now, together
            self._flush([])
        self._finish(None)

    def _take_held(self) -> bytes:
        held, self._held = self._held, b""
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        return held

