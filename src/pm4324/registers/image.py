"""The register image (one snapshot, frozen as registers) and the backend that serves it.

``build_image`` turns one snapshot plus the settings and relay states into the 16-bit words
and bits of every table, once per second. ``MapBackend`` keeps a reference to the newest
image and answers every request from the single image it looked up first, so a read never
mixes two seconds even when a snapshot arrives mid-request (the swap is one reference
assignment).

Encoding rules (documented in docs/registers.md):

* no data (no snapshot yet, NaN in the snapshot, a main the model lacks): float32 reads NaN,
  integers read 0, quality flags read ``no_data`` before the first snapshot;
* uint32 energies roll over modulo 2^32 like an odometer; other integers are clamped to
  their type's range;
* any address inside a mapped point may be read, also one half of a 32-bit value (as the
  sibling ICP DAS meters do); an unmapped address anywhere in a request is exception 02;
* a write must cover whole writable points: an unmapped, read-only or half-covered point is
  exception 02, a value outside the row's min..max (or refused by the settings) is exception
  03, and in both cases nothing changes. Valid settings go to ``apply_settings`` once, as one
  new ``Settings``, so a multi-register write is atomic;
* a relay coil is read-only while its relay is in alarm mode (its rules own it): a write is
  exception 02, like any read-only point, and changes nothing;
* every write passes the ``Guard`` (security/guard.py) with the client that sent it, after
  the address checks and before the value checks: a client without the right gets exception
  01 (the Modbus/TCP Security authorization failure), nothing changes, and the refusal is
  audited; an applied write is audited with its old and new values;
* a write returns the meter's durability future (device/commit.py) or None: the protocol
  server answers once it is True, so an acknowledged write is on disk;
* the status word (``meter_status``) is the meter's live one: it changes between seconds
  (e.g. ``not_saved`` as soon as a save fails). Before the first second the meter serves a
  power-up snapshot: restored energies, NaN values, ``no_data``; ``snapshot_seq`` and
  ``snapshot_time`` read 0 until the first second.

A connection that needs its own identity or word order reads and writes through
``for_client`` (a ``ClientSession``); the image in the other word order is built only while
someone reads it (docs/security.md, "word order per connection").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from pm4324.config.settings import DATA_FORMATS, WORD_ORDERS, Settings
from pm4324.registers import alarm_codes
from pm4324.registers.backend import AccessError, ExceptionCode
from pm4324.registers.codecs import INT_RANGES, encode
from pm4324.registers.table import Point, RegisterMap, Source
from pm4324.snapshot import AlarmStatus, Flag, Snapshot, Status

FIRMWARE_VERSION = "1.00"
MODEL_CODES = {"PM-4324": 4324, "PM-4324A": 43240}
CT_INPUT_CODES = {"clip-on": 0, "333mV": 1}  # [ours]: 1 = the PM-4324P variant
RESET_ALL = 9  # energy_reset value that clears every Meter (1..8 clear one Meter)
VENDOR = "ICP DAS"
NO_ALARMS = AlarmStatus()


@dataclass(frozen=True)
class Area:
    """One table's words (or bits) from ``base``; ``mapped`` marks addresses the map serves."""

    base: int
    values: np.ndarray
    mapped: np.ndarray

    def read(self, address: int, count: int) -> list[Any]:
        lo, hi = address - self.base, address - self.base + count
        if lo < 0 or hi > len(self.values) or not self.mapped[lo:hi].all():
            raise AccessError(
                ExceptionCode.ILLEGAL_DATA_ADDRESS,
                f"0x{address:04X}+{count} is not (entirely) mapped",
            )
        return self.values[lo:hi].tolist()


@dataclass(frozen=True)
class RegisterImage:
    """Every table as served for one snapshot (None before the first one)."""

    snapshot: Snapshot | None
    settings: Settings
    relays: tuple[bool, bool]
    areas: dict[str, Area]
    alarms: AlarmStatus = AlarmStatus()
    order: str = "low-first"
    counters: tuple[int, int] = (0, 0)  # audit entries dropped, writes refused
    status: int = 0  # the live meter status word the image was built with

    def read(self, table: str, address: int, count: int) -> list[Any]:
        area = self.areas.get(table)
        if area is None:
            raise AccessError(ExceptionCode.ILLEGAL_DATA_ADDRESS, f"no {table} points")
        return area.read(address, count)


def build_image(
    register_map: RegisterMap,
    snapshot: Snapshot | None,
    settings: Settings,
    relays: tuple[bool, bool],
    alarms: AlarmStatus = NO_ALARMS,
    order: str | None = None,
    counters: tuple[int, int] = (0, 0),
    status: int | None = None,
    previous: RegisterImage | None = None,
) -> RegisterImage:
    """Encode every point of the map (word order from ``settings`` unless ``order`` is given;
    ``status``: the live status word, else the snapshot's).

    With a ``previous`` image of the same snapshot, word order, counters and status (after a
    write), only the points whose inputs changed are encoded again: the settings section a
    write changed (``_parts``), the relays, the alarm status. A write costs a fraction of a
    full build, and a table none of whose points changed is shared, not copied.
    """
    order = order or settings.modbus.word_order
    if status is None:
        status = snapshot.status if snapshot is not None else int(Status.NO_DATA)
    reuse = previous is not None and previous.snapshot is snapshot \
        and previous.order == order and previous.counters == counters \
        and previous.status == status
    changed = _changed_parts(previous, settings, relays, alarms) if reuse else frozenset()
    areas = {}
    for table in ("coil", "discrete", "input", "holding"):
        points = register_map.table(table)
        if not points:
            continue
        base = points[0].address
        bits = table in ("coil", "discrete")
        if reuse and table in previous.areas:  # type: ignore[union-attr]
            old = previous.areas[table]  # type: ignore[union-attr]
            by_part = _state_points(register_map, table)
            points = tuple(p for part in changed for p in by_part.get(part, ()))
            if not points:
                areas[table] = old
                continue
            values, mapped = old.values.copy(), old.mapped
        else:
            size = max(p.end for p in points) - base
            values = np.zeros(size, dtype=bool if bits else np.uint16)
            mapped = np.zeros(size, dtype=bool)
            for p in points:
                mapped[p.address - base : p.end - base] = True
        for p in points:
            native = _native(p.source, snapshot, settings, relays, alarms, counters, status)
            offset = p.address - base
            if bits:
                values[offset] = bool(native) and math.isfinite(native)
            else:
                values[offset : p.end - base] = encode(p.type, _raw(p, native), order)
        values.flags.writeable = mapped.flags.writeable = False
        areas[table] = Area(base, values, mapped)
    return RegisterImage(snapshot, settings, tuple(relays), areas, alarms, order, counters,
                         status)


# What a point's value depends on besides the snapshot: the part of the settings its source
# reads (``_setting``), the relays, or the alarm status.
_SETTING_PARTS = {"relays": "relays", "alarms": "alarms", "meters": "meters", "mains": "mains",
                  "model": "model", "ct_input": "ct_input"}  # any other group: modbus


def _part(src: Source) -> str | None:
    if src.kind == "setting":
        return _SETTING_PARTS.get(src.group, "modbus")
    return src.kind if src.kind in ("relay", "alarm") else None


@cache
def _state_points(register_map: RegisterMap, table: str) -> dict[str, tuple[Point, ...]]:
    """The points of ``table`` whose value changes without a new snapshot, by ``_part``."""
    out: dict[str, list[Point]] = {}
    for p in register_map.table(table):
        part = _part(p.source)
        if part is not None:
            out.setdefault(part, []).append(p)
    return {k: tuple(v) for k, v in out.items()}


def _changed_parts(previous: RegisterImage | None, settings: Settings,
                   relays: tuple[bool, bool], alarms: AlarmStatus) -> frozenset[str]:
    """The parts whose points must be encoded again (settings sections compared by
    identity: an unchanged section is the same object after ``dataclasses.replace``)."""
    assert previous is not None
    old = previous.settings
    parts = {part for part in set(_SETTING_PARTS.values()) | {"modbus"}
             if getattr(old, part) is not getattr(settings, part)}
    if tuple(previous.relays) != tuple(relays):
        parts.add("relay")
    if _alarm_bits(previous.alarms) != _alarm_bits(alarms):
        parts.add("alarm")
    return frozenset(parts)


_STATE_KINDS = frozenset(("setting", "relay", "alarm"))  # what changes without a new snapshot


def _raw(p: Point, native: float) -> int | float:
    """Native value -> the raw register number (scale, rounding, no-data and range policy)."""
    raw = native * p.factor / p.scale
    if p.type == "float32":
        return raw
    if not math.isfinite(raw):
        return 0
    raw = round(raw)
    if p.type == "uint32":
        return raw % 2**32
    lo, hi = INT_RANGES[p.type]
    return min(max(raw, lo), hi)


def _native(
    src: Source, snap: Snapshot | None, settings: Settings, relays: tuple[bool, bool],
    alarms: AlarmStatus, counters: tuple[int, int], status: int,
) -> float:
    """The value a source stands for, in its native unit (NaN = no data)."""
    if src.kind == "measured":
        if src.group == "main" and src.index > settings.n_mains:
            return math.nan  # PM-4324: no second main
        if snap is None:
            return float(Flag.NO_DATA) if src.field == "flags" else math.nan
        return _measured(src, snap)
    if src.kind == "snapshot":
        if src.field == "status":
            return float(status)
        if snap is None or snap.seq < 0:  # before the first second (power-up snapshot)
            return 0.0
        return float(getattr(snap, src.field))
    if src.kind == "setting":
        return _setting(src, settings)
    if src.kind == "relay":
        return float(relays[src.index - 1])
    if src.kind == "alarm":
        return float(AlarmStatus.mask(getattr(alarms, src.field)))
    if src.kind == "security":
        return float(counters[src.field == "writes_refused"])
    if src.kind == "const" and src.field == "firmware_bcd":
        return float(FIRMWARE_VERSION)
    return 0.0  # const:reserved, command:* (commands read 0)


def _measured(src: Source, snap: Snapshot) -> float:
    i = src.index - 1
    if src.field == "lead_lag":
        values = snap.ct if src.group == "ct" else snap.meter
        p, q = float(values.p_w[i]), float(values.q_var[i])
        if not (math.isfinite(p) and math.isfinite(q)):
            return math.nan
        return 0.0 if q == 0 else (1.0 if (p >= 0) == (q > 0) else -1.0)
    array = getattr(getattr(snap, src.group), src.field)
    return float(array[i, src.phase - 1] if src.phase else array[i])


def _setting(src: Source, s: Settings) -> float:
    i = src.index - 1
    if src.group in ("relays", "alarms"):
        return alarm_codes.setting_value(src, s)
    if src.group == "meters":
        meter = s.meters[i]
        return float(meter.wiring.code if src.field == "wiring" else meter.ct_ratio)
    if src.group == "mains":
        return s.mains[i].pt_ratio if i < len(s.mains) else math.nan
    if src.group == "model":
        return float(MODEL_CODES[s.model])
    if src.group == "ct_input":
        return float(CT_INPUT_CODES[s.ct_input])
    value = getattr(s.modbus, src.field)
    if src.field == "word_order":
        return float(WORD_ORDERS.index(value))
    if src.field == "data_format":
        return float(DATA_FORMATS.index(value))
    return float(value)


def _alarm_bits(status: AlarmStatus) -> tuple:
    """What the image serves of the alarm status (the rule values are not served)."""
    return status.active, status.unacked


# MapBackend lives in map_backend.py (the write side); importers keep using this module.
from pm4324.registers.map_backend import ClientSession, MapBackend  # noqa: E402

__all__ = ["Area", "ClientSession", "MapBackend", "RegisterImage", "build_image"]
