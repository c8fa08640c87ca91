"""Sans-IO Modbus request handling: one request PDU in, one response PDU out.

Why our own code instead of pymodbus's server: pymodbus 3.16.1 answers requests for an
unknown unit id with exception 04 (wrong on a shared RS-485 bus), its server datastore is
mid-rewrite (the classic API is a set of deprecated shims), and the speed target (>= 2x the
pymodbus server) needs a lean path. The handler is small, strict and has no I/O, so TCP and
RTU share it and tests drive it with plain bytes.

Checks follow libmodbus's ``modbus_reply`` and the state diagrams of the Modbus Application
Protocol V1.1b3 §6, in this order:

1. function code supported, else exception 01;
2. PDU length and quantity (1..2000 bits, 1..1968 bits written, 1..125 registers read,
   1..123 registers written, byte count consistent with the quantity, FC05 value 0x0000 or
   0xFF00), else exception 03;
3. address range (``address + quantity`` past 0xFFFF, else what the backend says: an
   ``AccessError`` becomes its code, e.g. 02 for a range that is only partly mapped);
4. only then read or write.

An *unexpected* exception from the backend becomes exception 04 and is logged with its
traceback: it must never turn silently into a plausible answer.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from pm4324.registers.backend import (
    ACK_WAIT_S,
    AccessError,
    ExceptionCode,
    RegisterBackend,
    RegisterTable,
    on_disk,
)

__all__ = [
    "FC_NAMES",
    "GATEWAY_TARGET_FAILED",
    "SERVER_BUSY",
    "MAX_PDU",
    "WRITE_FUNCTIONS",
    "durable_answer",
    "exception_pdu",
    "gateway_target_failed",
    "handle_pdu",
    "request_pdu_length",
]

log = logging.getLogger(__name__)


@dataclass
class Deferred:
    """The answer to a write whose commit is still running: ``ack`` once ``durable`` is
    True, exception 04 if it is False or takes longer than ``ACK_WAIT_S`` (the change
    then may or may not survive a crash, like any unanswered request). A server sends it
    with ``send_when_durable``, keeping later answers of the same client behind it."""

    durable: Future
    ack: bytes

    def answer(self) -> bytes:
        d = self.durable
        if d.done() and not d.cancelled() and d.exception() is None and d.result():
            return self.ack
        return exception_pdu(self.ack[0], ExceptionCode.SERVER_DEVICE_FAILURE)

    def send_when_durable(self, loop: asyncio.AbstractEventLoop,
                          send: Callable[[bytes], None]) -> None:
        """Call ``send(answer)`` once, in ``loop``, when durable or after ACK_WAIT_S."""
        sent = False

        def finish() -> None:
            nonlocal sent
            if not sent:
                sent = True
                timer.cancel()
                send(self.answer())

        def wake(_: Future) -> None:  # in the committer's thread
            if not loop.is_closed():  # the server may have stopped meanwhile
                loop.call_soon_threadsafe(finish)

        timer = loop.call_later(ACK_WAIT_S, finish)
        self.durable.add_done_callback(wake)


def durable_answer(rsp: bytes | Deferred | None) -> bytes | None:
    """A write waiting for its commit: its answer once durable, exception 04 after
    ACK_WAIT_S (blocks: only where no write thread runs, e.g. while a server stops)."""
    if not isinstance(rsp, Deferred):
        return rsp
    on_disk(rsp.durable)  # too slow, or the commit failed: answer() says 04
    return rsp.answer()


def gateway_target_failed(pdu: bytes) -> bytes | None:
    """The answer to a unit id nobody serves: exception 0x0B, as a gateway whose target
    does not answer (none to a function code that has no exception answer)."""
    fc = pdu[0]
    return None if fc == 0 or fc >= 0x80 else exception_pdu(fc, GATEWAY_TARGET_FAILED)


def _after(durable: Future | None, ack: bytes) -> bytes | Deferred:
    """The ack now (nothing to wait for, or already durable), else a Deferred."""
    if durable is None:
        return ack
    deferred = Deferred(durable, ack)
    return deferred.answer() if durable.done() else deferred

MAX_PDU = 253  # 256-byte RTU ADU minus address and CRC; also the TCP limit
MAX_READ_BITS = 2000
MAX_WRITE_BITS = 1968
MAX_READ_REGISTERS = 125
MAX_WRITE_REGISTERS = 123
GATEWAY_TARGET_FAILED = 0x0B  # exception code: "gateway target device failed to respond"
SERVER_BUSY = 0x06  # exception code: "server device busy" (a client over its request rate)

FC_NAMES = {
    0x01: "read coils",
    0x02: "read discrete inputs",
    0x03: "read holding registers",
    0x04: "read input registers",
    0x05: "write single coil",
    0x06: "write single register",
    0x0F: "write multiple coils",
    0x10: "write multiple registers",
    0x2B: "encapsulated interface (0x0E read device identification)",
}

_ADDR_QTY = struct.Struct(">HH")
_MEI_DEVICE_ID = 0x0E

# Fixed request PDU lengths of the standard public function codes (Modbus Application
# Protocol V1.1b3 §6). Codes we do not serve are listed too: on RTU the length decides where
# a frame ends, and an unsupported but well-framed request deserves exception 01, not silence.
_FIXED_LEN = {
    0x01: 5, 0x02: 5, 0x03: 5, 0x04: 5, 0x05: 5, 0x06: 5,
    0x07: 1, 0x08: 5, 0x0B: 1, 0x0C: 1, 0x11: 1, 0x16: 7, 0x18: 3,
}
# Variable lengths: (offset of the byte-count byte, PDU length without the data bytes).
_COUNTED_LEN = {0x0F: (5, 6), 0x10: (5, 6), 0x14: (1, 2), 0x15: (1, 2), 0x17: (9, 10)}


def request_pdu_length(pdu: bytes | bytearray | memoryview) -> int | None:
    """Length a request PDU must have, judged from its first bytes.

    Returns 0 while more bytes are needed to tell, and None for a function code whose request
    length is not known (then only the RTU silence or the MBAP length can end the frame).
    """
    if not pdu:
        return 0
    fc = pdu[0]
    fixed = _FIXED_LEN.get(fc)
    if fixed is not None:
        return fixed
    counted = _COUNTED_LEN.get(fc)
    if counted is not None:
        at, base = counted
        return base + pdu[at] if len(pdu) > at else 0
    if fc == 0x2B:
        if len(pdu) < 2:
            return 0
        return 4 if pdu[1] == _MEI_DEVICE_ID else None
    return None


def exception_pdu(fc: int, code: int) -> bytes:
    """The exception response to function code ``fc``."""
    return bytes((fc | 0x80, code))


class _Reject(Exception):
    """Internal: stop handling and answer with this exception code."""

    def __init__(self, code: int):
        self.code = code


def _pack_bits(values: list[bool], count: int) -> bytes:
    acc = 0
    for i, v in enumerate(values):
        if v:
            acc |= 1 << i
    return acc.to_bytes((count + 7) // 8, "little")


_REG_STRUCTS = [struct.Struct(f">{n}H") for n in range(MAX_READ_REGISTERS + 1)]


def _check_len(pdu: bytes, n: int) -> None:
    if len(pdu) != n:
        raise _Reject(ExceptionCode.ILLEGAL_DATA_VALUE)


def _check_range(address: int, count: int) -> None:
    if address + count > 0x10000:
        raise _Reject(ExceptionCode.ILLEGAL_DATA_ADDRESS)


def _read_bits(backend: RegisterBackend, pdu: bytes) -> bytes:
    _check_len(pdu, 5)
    address, count = _ADDR_QTY.unpack_from(pdu, 1)
    if not 1 <= count <= MAX_READ_BITS:
        raise _Reject(ExceptionCode.ILLEGAL_DATA_VALUE)
    _check_range(address, count)
    values = backend.read_bits("coil" if pdu[0] == 0x01 else "discrete", address, count)
    if len(values) != count:
        raise RuntimeError(f"backend returned {len(values)} bits for {count}")
    data = _pack_bits(values, count)
    return bytes((pdu[0], len(data))) + data


_REG_TABLE: dict[int, RegisterTable] = {0x03: "holding", 0x04: "input"}
# Response headers (function code, byte count) for every quantity, built once.
_REG_HEADER = {fc: [bytes((fc, 2 * n & 0xFF)) for n in range(MAX_READ_REGISTERS + 1)]
               for fc in _REG_TABLE}


def _read_registers(backend: RegisterBackend, pdu: bytes) -> bytes:
    # The hot path of every poll: checks inlined.
    if len(pdu) != 5:
        raise _Reject(ExceptionCode.ILLEGAL_DATA_VALUE)
    address, count = _ADDR_QTY.unpack_from(pdu, 1)
    if not 1 <= count <= MAX_READ_REGISTERS:
        raise _Reject(ExceptionCode.ILLEGAL_DATA_VALUE)
    if address + count > 0x10000:
        raise _Reject(ExceptionCode.ILLEGAL_DATA_ADDRESS)
    fc = pdu[0]
    values = backend.read_registers(_REG_TABLE[fc], address, count)
    if len(values) != count:
        raise RuntimeError(f"backend returned {len(values)} registers for {count}")
    # struct.error on a value outside 0..65535: a backend bug, reported as exception 04.
    return _REG_HEADER[fc][count] + _REG_STRUCTS[count].pack(*values)


def _write_coil(backend: RegisterBackend, pdu: bytes) -> bytes | Deferred:
    _check_len(pdu, 5)
    address, value = _ADDR_QTY.unpack_from(pdu, 1)
    if value not in (0x0000, 0xFF00):
        raise _Reject(ExceptionCode.ILLEGAL_DATA_VALUE)
    return _after(backend.write_coils(address, [value == 0xFF00]), bytes(pdu))


def _write_register(backend: RegisterBackend, pdu: bytes) -> bytes | Deferred:
    _check_len(pdu, 5)
    address, value = _ADDR_QTY.unpack_from(pdu, 1)
    return _after(backend.write_registers(address, [value]), bytes(pdu))


def _write_coils(backend: RegisterBackend, pdu: bytes) -> bytes | Deferred:
    if len(pdu) < 6:
        raise _Reject(ExceptionCode.ILLEGAL_DATA_VALUE)
    address, count = _ADDR_QTY.unpack_from(pdu, 1)
    nbytes = pdu[5]
    if (
        not 1 <= count <= MAX_WRITE_BITS
        or nbytes != (count + 7) // 8
        or len(pdu) != 6 + nbytes
    ):
        raise _Reject(ExceptionCode.ILLEGAL_DATA_VALUE)
    _check_range(address, count)
    acc = int.from_bytes(pdu[6:], "little")
    return _after(backend.write_coils(address, [bool((acc >> i) & 1) for i in range(count)]),
                  bytes(pdu[:5]))


def _write_registers(backend: RegisterBackend, pdu: bytes) -> bytes | Deferred:
    if len(pdu) < 6:
        raise _Reject(ExceptionCode.ILLEGAL_DATA_VALUE)
    address, count = _ADDR_QTY.unpack_from(pdu, 1)
    nbytes = pdu[5]
    if not 1 <= count <= MAX_WRITE_REGISTERS or nbytes != 2 * count or len(pdu) != 6 + nbytes:
        raise _Reject(ExceptionCode.ILLEGAL_DATA_VALUE)
    _check_range(address, count)
    return _after(backend.write_registers(address, list(_REG_STRUCTS[count].unpack_from(pdu, 6))),
                  bytes(pdu[:5]))


# Read Device ID codes (Modbus Application Protocol V1.1b3 §6.21): stream access per
# category, or one object.
_STREAM_LAST = {1: 0x02, 2: 0x7F, 3: 0xFF}
_INDIVIDUAL = 4
_DEVID_HEADER = 7  # 2B 0E code conformity more-follows next-id count
_MAX_OBJECT = MAX_PDU - _DEVID_HEADER - 2


def _device_identification(backend: RegisterBackend, pdu: bytes) -> bytes:
    if len(pdu) < 2 or pdu[1] != _MEI_DEVICE_ID:
        raise _Reject(ExceptionCode.ILLEGAL_FUNCTION)  # other MEI types: not implemented
    _check_len(pdu, 4)
    code, object_id = pdu[2], pdu[3]
    if code not in _STREAM_LAST and code != _INDIVIDUAL:
        raise _Reject(ExceptionCode.ILLEGAL_DATA_VALUE)
    objects = {
        k: bytes(v[:_MAX_OBJECT]) for k, v in backend.device_identification().items()
        if 0 <= k <= 0xFF
    }
    # Conformity: we always allow individual access (0x80 flag); the level is the highest
    # category we hold an object of.
    top = max(objects, default=0)
    conformity = 0x80 | (3 if top >= 0x80 else 2 if top >= 0x03 else 1)
    if code == _INDIVIDUAL:
        if object_id not in objects:
            raise _Reject(ExceptionCode.ILLEGAL_DATA_ADDRESS)
        ids = [object_id]
    else:
        last = _STREAM_LAST[code]
        if object_id not in objects or object_id > last:
            object_id = 0  # the standard: an unknown object id restarts the stream at 0
        ids = sorted(k for k in objects if object_id <= k <= last)
    body = bytearray()
    more, next_id, count = 0x00, 0x00, 0
    for k in ids:
        value = objects[k]
        if _DEVID_HEADER + len(body) + 2 + len(value) > MAX_PDU:
            more, next_id = 0xFF, k
            break
        body += bytes((k, len(value))) + value
        count += 1
    return bytes((0x2B, _MEI_DEVICE_ID, code, conformity, more, next_id, count)) + body


_HANDLERS: dict[int, Callable[[RegisterBackend, bytes], bytes | Deferred]] = {
    0x01: _read_bits,
    0x02: _read_bits,
    0x03: _read_registers,
    0x04: _read_registers,
    0x05: _write_coil,
    0x06: _write_register,
    0x0F: _write_coils,
    0x10: _write_registers,
    0x2B: _device_identification,
}

WRITE_FUNCTIONS = frozenset((0x05, 0x06, 0x0F, 0x10))


def handle_pdu(backend: RegisterBackend, pdu: bytes) -> bytes | Deferred | None:
    """Serve one request PDU; return the response PDU (a Deferred for a write whose commit
    is still running: see ``Deferred``).

    None means "send nothing": an empty PDU, or a function code of 0 or >= 0x80, which no
    client sends as a request and which has no valid exception response.
    """
    if not pdu:
        return None
    fc = pdu[0]
    handler = _HANDLERS.get(fc)
    if handler is None:
        if fc == 0 or fc >= 0x80:
            return None
        return exception_pdu(fc, ExceptionCode.ILLEGAL_FUNCTION)
    try:
        return handler(backend, pdu)
    except _Reject as exc:
        return exception_pdu(fc, exc.code)
    except AccessError as exc:
        return exception_pdu(fc, exc.code)
    except Exception:
        log.exception("backend failed on request %s; answering exception 04", pdu.hex(" "))
        return exception_pdu(fc, ExceptionCode.SERVER_DEVICE_FAILURE)
