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
  exception 02, like any read-only point, and changes nothing.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pm4324.config.settings import DATA_FORMATS, WORD_ORDERS, Settings, SettingsError, Wiring
from pm4324.device.relays import RelayModeError
from pm4324.registers import alarm_codes
from pm4324.registers.backend import AccessError, BitTable, ExceptionCode, MeterControl
from pm4324.registers.backend import RegisterTable as RegisterTableName
from pm4324.registers.codecs import INT_RANGES, decode, encode
from pm4324.registers.table import MAX_BITS, MAX_REGISTERS, Point, RegisterMap, Source, load_map
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
) -> RegisterImage:
    """Encode every point of the map (word order from ``settings``)."""
    order = settings.modbus.word_order
    areas = {}
    for table in ("coil", "discrete", "input", "holding"):
        points = register_map.table(table)
        if not points:
            continue
        base = points[0].address
        size = max(p.end for p in points) - base
        bits = table in ("coil", "discrete")
        values = np.zeros(size, dtype=bool if bits else np.uint16)
        mapped = np.zeros(size, dtype=bool)
        for p in points:
            native = _native(p.source, snapshot, settings, relays, alarms)
            offset = p.address - base
            mapped[offset : p.end - base] = True
            if bits:
                values[offset] = bool(native) and math.isfinite(native)
            else:
                values[offset : p.end - base] = encode(p.type, _raw(p, native), order)
        values.flags.writeable = mapped.flags.writeable = False
        areas[table] = Area(base, values, mapped)
    return RegisterImage(snapshot, settings, tuple(relays), areas, alarms)


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
    alarms: AlarmStatus,
) -> float:
    """The value a source stands for, in its native unit (NaN = no data)."""
    if src.kind == "measured":
        if src.group == "main" and src.index > settings.n_mains:
            return math.nan  # PM-4324: no second main
        if snap is None:
            return float(Flag.NO_DATA) if src.field == "flags" else math.nan
        return _measured(src, snap)
    if src.kind == "snapshot":
        if snap is None:
            return float(Status.NO_DATA) if src.field == "status" else 0.0
        return float(getattr(snap, src.field))
    if src.kind == "setting":
        return _setting(src, settings)
    if src.kind == "relay":
        return float(relays[src.index - 1])
    if src.kind == "alarm":
        return float(AlarmStatus.mask(getattr(alarms, src.field)))
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


def _value_error(message: str) -> AccessError:
    return AccessError(ExceptionCode.ILLEGAL_DATA_VALUE, message)


def _address_error(message: str) -> AccessError:
    return AccessError(ExceptionCode.ILLEGAL_DATA_ADDRESS, message)


def _with_setting(s: Settings, src: Source, value: float) -> Settings:
    """``s`` with one setting changed (validated by Settings; raises SettingsError)."""
    if src.group == "meters" and src.field == "ct_ratio":
        return s.with_meter(src.index, ct_ratio=value)
    if src.group == "meters":
        wiring = Wiring.from_code(int(value))
        phases = s.meters[src.index - 1].circuit_phases
        # circuit_phases applies only to 1P2W-1CT; other modes need the default (see settings)
        phases = phases if wiring is Wiring.W1P2W_1CT else ("a", "b", "c")
        return s.with_meter(src.index, wiring=wiring, circuit_phases=phases)
    if src.group == "mains":
        if src.index > s.n_mains:
            raise _address_error(f"{s.model} has no main {src.index}")
        terminal = s.mains[src.index - 1].nominal_voltage_v / value
        if not 10 <= terminal <= 500:  # the same rule the settings file enforces
            raise _value_error(f"PT ratio {value:g} puts the nominal at {terminal:g} V terminal")
        return s.with_main(src.index, pt_ratio=value)
    return replace(s, modbus=replace(s.modbus, word_order=WORD_ORDERS[int(value)]))


def _alarm_bits(status: AlarmStatus) -> tuple:
    """What the image serves of the alarm status (the rule values are not served)."""
    return status.active, status.unacked


class MapBackend:
    """A ``RegisterBackend`` over a running meter (``MeterControl``) and the register map."""

    def __init__(self, control: MeterControl, register_map: RegisterMap | None = None):
        self._control = control
        self._map = register_map or load_map()
        self._lock = threading.Lock()  # guards rebuilding the image
        self._write_lock = threading.Lock()  # one write at a time (TCP and RTU may race)
        self._image = self._build(control.snapshot)
        control.add_listener(self._on_snapshot)

    @property
    def register_map(self) -> RegisterMap:
        return self._map

    @property
    def image(self) -> RegisterImage:
        """The image the next request will be served from."""
        return self._current()

    def _current(self) -> RegisterImage:
        """The newest image; rebuilt first if the snapshot, settings or relays moved on."""
        image = self._image
        if self._fresh(image):
            return image
        with self._lock:
            if not self._fresh(self._image):
                self._image = self._build(self._control.snapshot)
            return self._image

    def _fresh(self, image: RegisterImage) -> bool:
        c = self._control
        return (
            image.snapshot is c.snapshot
            and image.settings is c.settings
            and image.relays == tuple(c.relays)
            and _alarm_bits(image.alarms) == _alarm_bits(c.alarm_status)
        )

    def _build(self, snapshot: Snapshot | None) -> RegisterImage:
        c = self._control
        return build_image(self._map, snapshot, c.settings, c.relays, c.alarm_status)

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        image = self._build(snapshot)
        with self._lock:
            self._image = image

    # -- RegisterBackend ---------------------------------------------------------------------

    def read_bits(self, table: BitTable, address: int, count: int) -> list[bool]:
        if not 1 <= count <= MAX_BITS:
            raise _value_error(f"quantity {count} is outside 1..{MAX_BITS}")
        return self._current().read(table, address, count)

    def read_registers(self, table: RegisterTableName, address: int, count: int) -> list[int]:
        if not 1 <= count <= MAX_REGISTERS:
            raise _value_error(f"quantity {count} is outside 1..{MAX_REGISTERS}")
        return self._current().read(table, address, count)

    def _covered(self, table: str, address: int, count: int) -> list[Point]:
        """The writable points exactly covered by [address, address + count)."""
        if count < 1:
            raise _value_error("nothing to write")
        points: list[Point] = []
        a = address
        while a < address + count:
            p = self._map.at(table, a)
            if p is None or p.address != a or p.end > address + count:
                raise _address_error(f"{table} 0x{a:04X} is unmapped or only partly written")
            if not p.writable:
                raise _address_error(f"{p.name} (0x{a:04X}) is read-only")
            points.append(p)
            a = p.end
        return points

    def write_coils(self, address: int, values: list[bool]) -> None:
        points = self._covered("coil", address, len(values))
        with self._write_lock:
            for p in points:
                if alarm_codes.alarm_mode(self._control.settings, p.source.index):
                    raise _address_error(f"{p.name}: relay {p.source.index} is in alarm mode")
            try:
                for p in points:
                    self._control.set_relay(p.source.index - 1, bool(values[p.address - address]))
            except RelayModeError as exc:  # the mode changed under us (another interface)
                raise _address_error(str(exc)) from None
            self._current()  # rebuild now, so the next read shows the new state

    def write_registers(self, address: int, values: list[int]) -> None:
        points = self._covered("holding", address, len(values))
        with self._write_lock:
            self._write_settings(address, values, points)
            self._current()

    def _write_settings(self, address: int, values: list[int], points: list[Point]) -> None:
        settings = self._control.settings
        order = settings.modbus.word_order
        raws = []
        for p in points:
            raw = decode(p.type, values[p.address - address : p.end - address], order)
            if not p.minimum <= raw <= p.maximum:  # type: ignore[operator]
                raise _value_error(f"{p.name} = {raw}: must be {p.minimum}..{p.maximum}")
            raws.append((p, raw))
        new, resets, acks = settings, [], []
        grouped: dict[tuple[str, int], dict[str, float]] = {}  # relay/alarm fields, per slot
        try:
            for p, raw in raws:
                src = p.source
                if src.kind == "setting" and src.group in ("relays", "alarms"):
                    grouped.setdefault((src.group, src.index), {})[src.field] = p.native(raw)
                elif src.kind == "setting":
                    new = _with_setting(new, src, p.native(raw))
                elif raw and src.field == "alarm_ack":
                    acks.append(None if raw == alarm_codes.ACK_ALL else int(raw))
                elif raw:
                    resets.append(None if raw == RESET_ALL else int(raw))
            for (group, index), fields in grouped.items():
                new = alarm_codes.with_changes(new, group, index, fields)
            if new != settings:
                self._control.apply_settings(new)
        except SettingsError as exc:
            raise _value_error(str(exc)) from None
        for meter in resets:
            self._control.reset_energy(meter)
        for relay in acks:
            self._control.acknowledge_alarms(relay)

    def device_identification(self) -> dict[int, bytes]:
        model = self._control.settings.model
        return {
            0: VENDOR.encode(),
            1: model.encode(),
            2: FIRMWARE_VERSION.encode(),
            4: f"{model} multi-circuit power meter (software emulation)".encode(),
            5: model.encode(),
        }
