"""Manufacturer values: read from the Modbus register image, written through the same backend.

Every manufacturer entry that mirrors a register-table row is read *from the register image*
(``MapBackend.image``): the image's words are decoded with the table's own codec, so an SDO
upload or a TPDO carries exactly the raw number a Modbus read of the same second returns.
Writes (settings, relays, energy reset) go through ``MapBackend.write_coils`` /
``write_registers``: the same range checks, the same atomic ``apply_settings``, the same
save to the settings file.

Scaling of the evidenced INTEGER32 objects (ours; the manual's scaling is not readable):

* 0x3200 kW: active power in **W** (1 W resolution), signed (export negative), rounded to
  the nearest watt and clamped to +-2,147,483,647 W (+-2.1 GW: beyond any CT on this meter).
* 0x3201 kWh: import active energy in **0.01 kWh** (10 Wh), the resolution of the Modbus
  ``*_kwh_import_u32`` counters. It rolls over to 0 after 21,474,836.47 kWh (modulo 2^31,
  like an odometer), so it never reads negative; the Modbus uint32 counter rolls over at
  2^32, so the two agree below 2^31 (21.47 GWh).
* No data (before the first snapshot, or a NaN power): both read -2,147,483,648
  (0x80000000), a value neither can otherwise take.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pm4324.protocols.canopen.codes import Abort, SdoAbort
from pm4324.protocols.canopen.objects import Entry, encode
from pm4324.registers.backend import AccessError, ExceptionCode, MeterControl
from pm4324.registers.codecs import decode as decode_words
from pm4324.registers.codecs import encode as encode_words
from pm4324.registers.image import MapBackend, RegisterImage
from pm4324.security.roles import CANOPEN, Client
from pm4324.snapshot import Snapshot

INT32_MAX = 2**31 - 1
NO_DATA = -(2**31)  # 0x80000000 in an INTEGER32
KWH_SCALE = 0.01  # 0x3201 counts 0.01 kWh, like the Modbus uint32 counters

#: runs a call in the meter's own thread (the device loop) and returns its result
Caller = Callable[..., Any]


def kw_raw(p_w: float) -> int:
    """Active power in W -> the 0x3200 INTEGER32 (W, clamped; NO_DATA for NaN)."""
    if not math.isfinite(p_w):
        return NO_DATA if math.isnan(p_w) else int(math.copysign(INT32_MAX, p_w))
    return max(-INT32_MAX, min(INT32_MAX, round(p_w)))


def kwh_raw(wh: float) -> int:
    """Energy in Wh -> the 0x3201 INTEGER32 (0.01 kWh, modulo 2^31; NO_DATA for NaN)."""
    if not math.isfinite(wh):
        return NO_DATA
    return round(wh * 1e-3 / KWH_SCALE) % 2**31  # the register image's own arithmetic


def _direct(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


class Sample:
    """The values of one moment: the newest snapshot, and its register image only when an
    entry needs one (built at most once). A burst of TPDOs mapping only 0x3200/0x3201 thus
    never waits for the image."""

    def __init__(self, values: Values):
        self._values = values
        self._image: RegisterImage | None = None
        self.snapshot: Snapshot | None = values.control.snapshot

    def image(self) -> RegisterImage:
        if self._image is None:
            self._image = self._values.image()
        return self._image


class Values:
    """Reads and writes of the manufacturer entries (0x2000..0x3FFF)."""

    def __init__(self, control: MeterControl, backend: MapBackend, call: Caller = _direct):
        self.control = control
        self._backend = backend
        self._call = call
        # who the guard sees writing: the bus (CAN frames carry no sender)
        bus = control.settings.canopen
        self._writer = backend.for_client(Client(CANOPEN, f"{bus.interface}:{bus.channel}"))

    def image(self) -> RegisterImage:
        """The image of the newest snapshot (rebuilt if settings or relays changed)."""
        return self._backend.image

    def raw(self, entry: Entry, sample: Sample) -> int | float:
        """The raw number of an entry (for table rows: the Modbus register's raw number)."""
        if entry.kind == "point":
            p = entry.point
            assert p is not None
            image = sample.image()
            words = image.read(p.table, p.address, p.size)
            if p.type == "bit":
                return int(bool(words[0]))
            return decode_words(p.type, words, image.settings.modbus.word_order)
        if entry.kind in ("kw", "kwh"):
            snap, src = sample.snapshot, entry.source
            assert src is not None
            if snap is None:
                return NO_DATA
            value = float(getattr(getattr(snap, src.group), src.field)[src.index - 1])
            return kw_raw(value) if entry.kind == "kw" else kwh_raw(value)
        raise SdoAbort(Abort.GENERAL, f"{entry.name}: no value source")

    def read(self, entry: Entry, sample: Sample | None = None) -> bytes:
        """An entry's value as CANopen bytes (of ``sample``, else of the newest snapshot)."""
        if not entry.readable:
            raise SdoAbort(Abort.WRITE_ONLY, f"{entry.name} is write-only")
        return encode(entry.data_type, self.raw(entry, sample or Sample(self)))

    def write(self, entry: Entry, value: int | float) -> None:
        """Write a setting, relay or command; the abort code says why it was refused."""
        p = entry.point
        if not entry.writable or p is None:
            raise SdoAbort(Abort.READ_ONLY, f"{entry.name} is read-only")
        if not math.isfinite(value):
            raise SdoAbort(Abort.VALUE_RANGE, f"{entry.name} = {value}")
        entry.check_range(value)
        try:
            if p.table == "coil":
                self._call(self._writer.write_coils, p.address, [bool(value)])
            else:
                words = encode_words(p.type, value, self.control.settings.modbus.word_order)
                self._call(self._writer.write_registers, p.address, words)
        except AccessError as exc:  # 03: a value refused; 02: not now (alarm mode, no main 2);
            # 01: the write policy refused it (docs/security.md) -> 0x08000020
            code = Abort.VALUE_RANGE if exc.code is ExceptionCode.ILLEGAL_DATA_VALUE \
                else Abort.DEVICE_STATE if exc.code is ExceptionCode.ILLEGAL_DATA_ADDRESS \
                else Abort.CANNOT_STORE
            raise SdoAbort(code, f"{entry.name} = {value}: {exc}") from None
        except SdoAbort:
            raise
        except Exception as exc:  # e.g. the meter refused the change, or did not answer in time
            raise SdoAbort(Abort.CANNOT_STORE, f"{entry.name} = {value}: {exc!r}") from None
