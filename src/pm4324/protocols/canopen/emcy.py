"""EMCY producer (CiA 301 §7.2.7) and the error register 0x1001, sans I/O.

Conditions come from each snapshot's quality flags, plus transient ones the node reports:

| EMCY code | Error register bit | When |
|---|---|---|
| 0x3120 mains under-voltage | voltage | a main's ``voltage_absent`` flag (voltage loss) |
| 0x3110 mains over-voltage | voltage | a main's ``clipping`` flag (voltage input over range) |
| 0x2100 current, input side | current | a used CT's ``clipping`` flag while its main is not clipping |
| 0x5000 device hardware | generic | ``invalid_samples`` anywhere (the ADC gave NaN/inf) |
| 0x6100 internal software | generic | an exception inside the CANopen node (transient) |
| 0x8210 PDO length error | communication | an RPDO shorter than its mapping (transient) |
| 0x8130 life guard error | communication | the master's node guarding stopped (0x100C x 0x100D) |

A condition is announced once when it appears, and an error reset (code 0x0000) is sent when
it disappears, carrying the error register that remains (bit 0 "generic" is set while any
error is active). Bytes 3..7 (manufacturer-specific) say where: byte 3 = 1 main, 2 CT,
3 device, 4 RPDO, 5 node; byte 4 = its number; bytes 5..6 = the quality flags (UNSIGNED16);
byte 7 = 0.

Each error that appears also goes to the error history 0x1003 (newest first, at most
``ERROR_HISTORY`` entries): error code | where << 16 | number << 24. The EMCY inhibit time
0x1015 (100 us) spaces the frames: one that comes earlier waits in a bounded queue.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from pm4324.protocols.canopen.codes import Emcy, ErrorBit
from pm4324.snapshot import Flag, Snapshot

_FRAME = struct.Struct("<HBBBHB")
MAIN, CT, DEVICE, RPDO, NODE = 1, 2, 3, 4, 5
QUEUED = 32  # EMCY frames waiting for the inhibit time; older ones are dropped beyond


@dataclass(frozen=True, order=True)
class Condition:
    code: int
    bit: int
    where: int  # MAIN, CT, DEVICE or RPDO
    number: int
    flags: int = 0

    @property
    def key(self) -> tuple[int, int, int]:
        return self.code, self.where, self.number


def conditions(snap: Snapshot) -> list[Condition]:
    """The error conditions a snapshot shows."""
    out: list[Condition] = []
    invalid = 0
    main_clipping = set()
    for i in range(snap.settings.n_mains):
        f = int(snap.main.flags[i])
        invalid |= f & Flag.INVALID_SAMPLES
        if f & Flag.VOLTAGE_ABSENT:
            out.append(Condition(Emcy.MAINS_UNDER_VOLTAGE, ErrorBit.VOLTAGE, MAIN, i + 1, f))
        if f & Flag.CLIPPING:
            main_clipping.add(i)
            out.append(Condition(Emcy.MAINS_OVER_VOLTAGE, ErrorBit.VOLTAGE, MAIN, i + 1, f))
    for k in range(1, len(snap.ct.flags) + 1):
        f = int(snap.ct.flags[k - 1])
        if f & Flag.UNUSED:
            continue
        invalid |= f & Flag.INVALID_SAMPLES
        if f & Flag.CLIPPING and snap.settings.main_of_ct(k) not in main_clipping:
            out.append(Condition(Emcy.CURRENT_INPUT, ErrorBit.CURRENT, CT, k, f))
    if invalid:
        out.append(Condition(Emcy.HARDWARE, ErrorBit.GENERIC, DEVICE, 0, invalid))
    return out


def frame(code: int, register: int, c: Condition) -> bytes:
    return _FRAME.pack(code, register, c.where, c.number, c.flags & 0xFFFF, 0)


class EmcyProducer:
    """Tracks active conditions; ``update`` and ``raise_``/``clear`` return frames to send."""

    def __init__(self, history_size: int = 8) -> None:
        self.active: dict[tuple[int, int, int], Condition] = {}
        self._measured: set[tuple[int, int, int]] = set()
        self.history: deque[int] = deque(maxlen=history_size)  # 0x1003, newest first
        self.inhibit_100us = 0  # 0x1015
        self._queue: deque[bytes] = deque(maxlen=QUEUED)
        self._last_sent: float | None = None

    @property
    def register(self) -> int:
        bits = 0
        for c in self.active.values():
            bits |= c.bit
        return bits | ErrorBit.GENERIC if bits else 0

    def reset(self) -> None:
        """Forget every condition (NMT reset): active ones are announced again. The error
        history stays (it is cleared by writing 0 to 0x1003:0)."""
        self.active.clear()
        self._measured.clear()
        self._queue.clear()
        self._last_sent = None

    # -- sending, spaced by the inhibit time -------------------------------------------------

    def queue(self, frame: bytes) -> None:
        self._queue.append(frame)

    def due(self) -> float | None:
        """When the next queued frame may go (None: nothing queued)."""
        if not self._queue:
            return None
        if self._last_sent is None or not self.inhibit_100us:
            return 0.0
        return self._last_sent + self.inhibit_100us * 1e-4

    def take(self, now: float) -> list[bytes]:
        """The queued frames that may be sent at ``now`` (all of them without inhibit time)."""
        out = []
        while (due := self.due()) is not None and now >= due:
            out.append(self._queue.popleft())
            self._last_sent = now
        return out

    def update(self, found: list[Condition]) -> list[bytes]:
        """New snapshot conditions -> EMCY frames (appearing, then disappearing ones)."""
        frames = []
        now = {c.key: c for c in found}
        for key in sorted(now.keys() - self._measured):
            frames.append(self._raise(now[key]))
        for key in sorted(self._measured - now.keys()):
            frames.append(self._clear(key))
        self._measured = set(now)
        return frames

    def raise_(self, c: Condition) -> bytes | None:
        """A transient condition; None if it is already active."""
        return None if c.key in self.active else self._raise(c)

    def clear(self, code: int, where: int, number: int) -> bytes | None:
        key = (code, where, number)
        return self._clear(key) if key in self.active else None

    def _raise(self, c: Condition) -> bytes:
        self.active[c.key] = c
        self.history.appendleft(c.code | (c.where & 0xFF) << 16 | (c.number & 0xFF) << 24)
        return frame(c.code, self.register, c)

    def _clear(self, key: tuple[int, int, int]) -> bytes:
        c = self.active.pop(key)
        return frame(Emcy.RESET, self.register, c)
