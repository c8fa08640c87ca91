"""SDO server (CiA 301 §7.2.4): expedited and segmented upload and download, sans I/O.

``SdoServer.handle(request)`` takes the 8 data bytes of one frame to 0x600 + node-ID and
returns the 8 bytes to send on 0x580 + node-ID (or None: no answer). Object access goes
through an ``ObjectAccess`` (the node), which raises ``SdoAbort`` with the right code.

Rules:

* a request whose length is not 8 bytes is ignored (as CiA 301 frames SDOs at 8 bytes);
* block transfers (ccs 5 and 6) and unknown command specifiers: abort 0x05040001;
* a segment with no transfer in progress: abort 0x05040001; a wrong toggle bit 0x05030000;
* a segmented transfer idle for ``timeout_s`` is aborted with 0x05040000 (``poll``);
* a new initiate request ends any transfer in progress; a client abort ends it silently;
* an unexpected error behind the object access is answered with 0x08000000 (general error);
* download lengths: a size indicated at initiate that differs from the object's size is
  0x06070010; segmented data running past the size 0x06070012, ending short 0x06070013.
  Access (read-only 0x06010002, write-only 0x06010001) is checked at initiate, before data.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pm4324.protocols.canopen.codes import Abort, SdoAbort
from pm4324.protocols.canopen.objects import Entry

log = logging.getLogger(__name__)

_HEAD = struct.Struct("<BHB")
_ABORT = struct.Struct("<BHBI")
_SIZE = struct.Struct("<I")


class ObjectAccess(Protocol):
    def entry(self, index: int, sub: int) -> Entry: ...

    def read(self, entry: Entry) -> bytes: ...

    def write(self, entry: Entry, data: bytes) -> None: ...


@dataclass
class _Transfer:
    upload: bool
    entry: Entry
    buffer: bytearray
    size: int | None  # bytes announced (download) or total (upload)
    toggle: int = 0
    last: float = 0.0


def abort_frame(index: int, sub: int, code: int) -> bytes:
    return _ABORT.pack(0x80, index, sub, int(code))


class SdoServer:
    """One SDO server channel (the default 0x600/0x580 + node-ID pair)."""

    def __init__(self, access: ObjectAccess, timeout_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.access = access
        self.timeout_s = timeout_s
        self._clock = clock
        self._transfer: _Transfer | None = None
        self.aborts_sent = 0
        self.on_error: Callable[[Exception], None] | None = None  # told of unexpected errors

    def reset(self) -> None:
        """Forget any transfer in progress (NMT reset, stop)."""
        self._transfer = None

    @property
    def deadline(self) -> float | None:
        t = self._transfer
        return None if t is None else t.last + self.timeout_s

    def poll(self, now: float) -> bytes | None:
        """The timeout abort of a transfer idle past its deadline, else None."""
        t = self._transfer
        if t is None or now < t.last + self.timeout_s:
            return None
        self._transfer = None
        return self._abort(t.entry.index, t.entry.sub, Abort.TIMEOUT)

    def handle(self, data: bytes) -> bytes | None:
        if len(data) != 8:
            log.debug("SDO request of %d bytes ignored", len(data))
            return None
        ccs = data[0] >> 5
        index, sub = _HEAD.unpack_from(data)[1:]
        try:
            if ccs == 2:
                return self._initiate_upload(index, sub)
            if ccs == 3:
                return self._upload_segment(data)
            if ccs == 1:
                return self._initiate_download(data, index, sub)
            if ccs == 0:
                return self._download_segment(data)
            if ccs == 4:
                self._transfer = None  # the client aborted: no answer
                return None
            self._transfer = None
            return self._abort(index, sub, Abort.COMMAND)
        except Exception as exc:  # an abort, or a bug behind the access: general error
            t, self._transfer = self._transfer, None
            if ccs in (0, 3):
                index, sub = (t.entry.index, t.entry.sub) if t is not None else (0, 0)
            if not isinstance(exc, SdoAbort):
                if self.on_error is not None:
                    self.on_error(exc)
                exc = SdoAbort(Abort.GENERAL, repr(exc))
            log.debug("SDO 0x%04X:%d aborted: %s", index, sub, exc)
            return self._abort(index, sub, exc.code)

    def _abort(self, index: int, sub: int, code: int) -> bytes:
        self.aborts_sent += 1
        return abort_frame(index, sub, code)

    # -- upload ------------------------------------------------------------------------------

    def _initiate_upload(self, index: int, sub: int) -> bytes:
        self._transfer = None
        entry = self.access.entry(index, sub)
        if not entry.readable:
            raise SdoAbort(Abort.WRITE_ONLY, f"{entry.name} is write-only")
        value = self.access.read(entry)
        if len(value) <= 4:
            command = 0x43 | (4 - len(value)) << 2
            return _HEAD.pack(command, index, sub) + value.ljust(4, b"\0")
        self._transfer = _Transfer(True, entry, bytearray(value), len(value), last=self._clock())
        return _HEAD.pack(0x41, index, sub) + _SIZE.pack(len(value))

    def _upload_segment(self, data: bytes) -> bytes:
        t = self._segment_transfer(upload=True, toggle=data[0] & 0x10)
        chunk, t.buffer = bytes(t.buffer[:7]), t.buffer[7:]
        command = t.toggle | (7 - len(chunk)) << 1
        if not t.buffer:
            command |= 0x01
            self._transfer = None
        t.toggle ^= 0x10
        t.last = self._clock()
        return bytes([command]) + chunk.ljust(7, b"\0")

    def _segment_transfer(self, upload: bool, toggle: int) -> _Transfer:
        t = self._transfer
        if t is None or t.upload != upload:
            raise SdoAbort(Abort.COMMAND, "segment without a transfer in progress")
        if self._clock() >= t.last + self.timeout_s:
            raise SdoAbort(Abort.TIMEOUT, "segment after the transfer timed out")
        if toggle != t.toggle:
            raise SdoAbort(Abort.TOGGLE, "toggle bit not alternated")
        return t

    # -- download ----------------------------------------------------------------------------

    def _initiate_download(self, data: bytes, index: int, sub: int) -> bytes:
        self._transfer = None
        command = data[0]
        entry = self.access.entry(index, sub)
        if not entry.writable:
            raise SdoAbort(Abort.READ_ONLY, f"{entry.name} is read-only")
        expedited, indicated = command & 0x02, command & 0x01
        size = entry.size
        if expedited:
            n = 4 - (command >> 2 & 0x03) if indicated else (size or 4)
            if size is not None and n != size:
                raise SdoAbort(Abort.LENGTH, f"{entry.name}: {n} bytes for a {size}-byte value")
            self.access.write(entry, bytes(data[4 : 4 + n]))
        else:
            announced = _SIZE.unpack_from(data, 4)[0] if indicated else None
            if announced is not None and size is not None and announced != size:
                raise SdoAbort(Abort.LENGTH, f"{entry.name}: {announced} bytes announced, "
                               f"the value has {size}")
            self._transfer = _Transfer(False, entry, bytearray(), announced, last=self._clock())
        return _HEAD.pack(0x60, index, sub) + b"\0\0\0\0"

    def _download_segment(self, data: bytes) -> bytes:
        command = data[0]
        t = self._segment_transfer(upload=False, toggle=command & 0x10)
        t.buffer += data[1 : 8 - (command >> 1 & 0x07)]
        limit = t.size if t.size is not None else t.entry.size
        if limit is not None and len(t.buffer) > limit:
            raise SdoAbort(Abort.LENGTH_HIGH, f"{t.entry.name}: more than {limit} bytes")
        response = bytes([0x20 | t.toggle]) + b"\0" * 7
        t.toggle ^= 0x10
        t.last = self._clock()
        if command & 0x01:
            if limit is not None and len(t.buffer) < limit:
                raise SdoAbort(Abort.LENGTH_LOW, f"{t.entry.name}: {len(t.buffer)} of {limit} bytes")
            self.access.write(t.entry, bytes(t.buffer))
            self._transfer = None
        return response
