"""``MapBackend``: serves the register image to the protocol servers and applies writes.

The rules of reads and writes are in image.py's docstring; this module is the write side
(settings, relays, commands) and the per-client view (``ClientSession``).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import replace

from pm4324.config.settings import WORD_ORDERS, Settings, SettingsError, Wiring
from pm4324.device.relays import RelayModeError
from pm4324.registers import alarm_codes
from pm4324.registers.backend import AccessError, BitTable, ExceptionCode, MeterControl
from pm4324.registers.backend import RegisterTable as RegisterTableName
from pm4324.registers.codecs import decode
from pm4324.registers.image import (
    FIRMWARE_VERSION,
    RESET_ALL,
    VENDOR,
    RegisterImage,
    _alarm_bits,
    build_image,
)
from pm4324.registers.table import MAX_BITS, MAX_REGISTERS, Point, RegisterMap, Source, load_map
from pm4324.security.guard import Guard, Refused, Write
from pm4324.security.roles import Client, Right
from pm4324.snapshot import Snapshot, Status

IN_PROCESS = Client("in-process")  # a caller in this process (tools, tests): no policy names it


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
        old = s.meters[src.index - 1]
        # circuit_phases (and [cts.N] phase) apply to 1P2W-1CT and 3P4W-3CT: kept while the
        # wiring stays, and into 1P2W-1CT; a change to another mode needs the default
        same = wiring is old.wiring or wiring is Wiring.W1P2W_1CT
        phases = old.circuit_phases if same else ("a", "b", "c")
        return s.with_meter(src.index, wiring=wiring, circuit_phases=phases)
    if src.group == "mains":
        return s.with_main(src.index, pt_ratio=value)
    return replace(s, modbus=replace(s.modbus, word_order=WORD_ORDERS[int(value)]))


def _import_kwh(snapshot: Snapshot | None, meter: int | None) -> str:
    """What a reset would zero, for the audit entry: import kWh of the Meters concerned."""
    if snapshot is None:
        return "no data"
    wh = snapshot.meter_energy.wh_import
    if meter is not None and not 1 <= meter <= len(wh):
        return f"no Meter {meter}"  # the value check refuses it after the rights check
    meters = range(1, len(wh) + 1) if meter is None else [meter]
    return "import " + ", ".join(f"M{m} {wh[m - 1] / 1000:.2f}" for m in meters) + " kWh"


def _text(p: Point, raw: int | float) -> str:
    return f"{p.native(raw):g}"


class MapBackend:
    """A ``RegisterBackend`` over a running meter (``MeterControl``) and the register map.

    Its own ``write_*`` methods act for ``IN_PROCESS``; interfaces use ``for_client``.
    """

    def __init__(self, control: MeterControl, register_map: RegisterMap | None = None,
                 guard: Guard | None = None):
        self._control = control
        self._map = register_map or load_map()
        self.guard = guard or Guard(None)
        self._lock = threading.Lock()  # guards rebuilding the image
        self._write_lock = threading.Lock()  # one write at a time (TCP and RTU may race)
        self._image = self._build(control.snapshot)
        self._other: dict[str, RegisterImage] = {}  # images in the other word order, on demand
        control.add_listener(self._on_snapshot)

    @property
    def register_map(self) -> RegisterMap:
        return self._map

    @property
    def image(self) -> RegisterImage:
        """The image of the newest snapshot (built now if its listener has not yet)."""
        return self._current()

    def for_client(self, client: Client, word_order: str | None = None) -> ClientSession:
        """The backend as one client sees it: its identity on writes, its word order."""
        return ClientSession(self, client, word_order)

    def _counters(self) -> tuple[int, int]:
        audit = self.guard.audit
        return (audit.dropped if audit is not None else 0, self.guard.refused)

    def _current(self, order: str | None = None, newest_snapshot: bool = True) -> RegisterImage:
        """The newest image; rebuilt first if the settings or relays moved on, or (with
        ``newest_snapshot``) the snapshot.

        Modbus reads pass False: the listener builds a new snapshot's image in the meter's
        thread, and until it swaps it in, the previous second is served (whole) rather than
        the protocol loop building the image itself. Likewise a read does not wait while
        another thread rebuilds the image (a write does so before it is answered, so no
        completed write is missing from what the read gets).
        """
        if order is not None and order != self._control.settings.modbus.word_order:
            return self._current_other(order)
        image = self._image
        if self._fresh(image, newest_snapshot):
            return image
        if not self._lock.acquire(blocking=newest_snapshot):
            return image  # being rebuilt right now, by a writer or the listener
        try:
            if not self._fresh(self._image, newest_snapshot):
                self._image = self._build(self._control.snapshot, previous=self._image)
            return self._image
        finally:
            self._lock.release()

    def _current_other(self, order: str) -> RegisterImage:
        image = self._other.get(order)
        if image is not None and self._fresh(image):
            return image
        with self._lock:
            image = self._other.get(order)
            if image is None or not self._fresh(image):
                image = self._build(self._control.snapshot, order, previous=image)
                self._other[order] = image
            return image

    def _fresh(self, image: RegisterImage, newest_snapshot: bool = True) -> bool:
        c = self._control
        return (
            (not newest_snapshot or image.snapshot is c.snapshot)
            and image.settings is c.settings
            and image.relays == tuple(c.relays)
            and _alarm_bits(image.alarms) == _alarm_bits(c.alarm_status)
            and image.status == _live_status(c)
        )  # not the security counters: a storm of refusals must not cost a rebuild each

    def _build(self, snapshot: Snapshot | None, order: str | None = None,
               previous: RegisterImage | None = None) -> RegisterImage:
        c = self._control
        return build_image(self._map, snapshot, c.settings, c.relays, c.alarm_status, order,
                           self._counters(), _live_status(c), previous)

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        image = self._build(snapshot)
        with self._lock:
            self._image = image

    # -- RegisterBackend ---------------------------------------------------------------------

    def read_bits(self, table: BitTable, address: int, count: int) -> list[bool]:
        if not 1 <= count <= MAX_BITS:
            raise _value_error(f"quantity {count} is outside 1..{MAX_BITS}")
        return self._current(newest_snapshot=False).read(table, address, count)

    def read_registers(self, table: RegisterTableName, address: int, count: int,
                       word_order: str | None = None) -> list[int]:
        if not 1 <= count <= MAX_REGISTERS:
            raise _value_error(f"quantity {count} is outside 1..{MAX_REGISTERS}")
        return self._current(word_order, newest_snapshot=False).read(table, address, count)

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

    def _authorize(self, client: Client, writes: list[Write]) -> None:
        try:
            self.guard.authorize(client, writes)
        except Refused as exc:
            raise AccessError(ExceptionCode.ILLEGAL_FUNCTION, str(exc)) from None

    def write_coils(self, address: int, values: list[bool], client: Client = IN_PROCESS
                    ) -> Future | None:
        """Switch relays; the future is True once the new states are on disk."""
        points = self._covered("coil", address, len(values))
        relays = [p for p in points if p.source.kind == "relay"]
        modes = [p for p in points if p.source.kind == "setting"]  # relayK_alarm_mode
        done = None
        with self._write_lock:
            state, settings = self._control.relays, self._control.settings
            writes = [Write(Right.RELAYS, f"coil 0x{p.address:04X} {p.name}",
                            str(int(state[p.source.index - 1])),
                            str(int(values[p.address - address]))) for p in relays]
            writes += [Write(Right.SETTINGS, f"coil 0x{p.address:04X} {p.name}",
                             str(int(alarm_codes.alarm_mode(settings, p.source.index))),
                             str(int(values[p.address - address]))) for p in modes]
            self._authorize(client, writes)
            if modes:
                done = self._write_relay_modes(address, values, modes)
            for p in relays:
                if alarm_codes.alarm_mode(self._control.settings, p.source.index):
                    raise _address_error(f"{p.name}: relay {p.source.index} is in alarm mode")
            try:
                for p in relays:
                    done = self._control.set_relay(
                        p.source.index - 1, bool(values[p.address - address])) or done
            except RelayModeError as exc:  # the mode changed under us (another interface)
                raise _address_error(str(exc)) from None
            self.guard.accepted(client, writes)
            self._current()  # rebuild now, so the next read shows the new state
        return done

    def _write_relay_modes(self, address: int, values: list[bool], points: list[Point]
                           ) -> Future | None:
        settings = new = self._control.settings
        try:
            for p in points:
                mode = float(bool(values[p.address - address]))  # the code: 0 manual, 1 alarm
                new = alarm_codes.with_changes(new, "relays", p.source.index, {"mode": mode})
            if new != settings:
                return self._control.apply_settings(new)
        except SettingsError as exc:
            raise _value_error(str(exc)) from None
        return None

    def write_registers(self, address: int, values: list[int], client: Client = IN_PROCESS,
                        word_order: str | None = None) -> Future | None:
        """Settings and commands; the future is True once their effect is on disk."""
        points = self._covered("holding", address, len(values))
        with self._write_lock:
            order = word_order or self._control.settings.modbus.word_order
            raws = [(p, decode(p.type, values[p.address - address : p.end - address], order))
                    for p in points]
            writes = self._writes(raws)
            self._authorize(client, writes)
            done = self._write_settings(raws)
            self.guard.accepted(client, writes)
            self._current()
        return done

    def _writes(self, raws: list[tuple[Point, int | float]]) -> list[Write]:
        """What a holding write would change, with the right each change needs."""
        image = self._current()
        writes = []
        for p, raw in raws:
            target = f"holding 0x{p.address:04X} {p.name}"
            if p.source.kind == "command" and p.source.field == "energy_reset":
                if raw:  # 0 = no action, needs no right
                    old = _import_kwh(image.snapshot, None if raw == RESET_ALL else int(raw))
                    writes.append(Write(Right.ENERGY_RESET, target, old, _text(p, raw)))
                continue
            if p.source.kind == "command":
                if raw:
                    writes.append(Write(Right.RELAYS, target, "0", _text(p, raw)))
                continue
            old = decode(p.type, image.read("holding", p.address, p.size), image.order)
            writes.append(Write(Right.SETTINGS, target, _text(p, old), _text(p, raw)))
        return writes

    def _write_settings(self, raws: list[tuple[Point, int | float]]) -> Future | None:
        settings = self._control.settings
        for p, raw in raws:
            if p.source.group == "mains" and p.source.index > settings.n_mains:
                # checked before the value, so every write to it gets the same code
                raise _address_error(f"{p.name}: {settings.model} has no main {p.source.index}")
            if not p.minimum <= raw <= p.maximum:  # type: ignore[operator]
                raise _value_error(f"{p.name} = {raw}: must be {p.minimum}..{p.maximum}")
        settings = self._control.settings
        new, resets, acks, done = settings, [], [], None
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
                done = self._control.apply_settings(new)
        except SettingsError as exc:
            raise _value_error(str(exc)) from None
        for meter in resets:
            done = self._control.reset_energy(meter) or done
        for relay in acks:
            done = self._control.acknowledge_alarms(relay) or done
        return done  # the last commit asked for covers every change before it

    def device_identification(self) -> dict[int, bytes]:
        model = self._control.settings.model
        return {
            0: VENDOR.encode(),
            1: model.encode(),
            2: FIRMWARE_VERSION.encode(),
            4: f"{model} multi-circuit power meter (software emulation)".encode(),
            5: model.encode(),
        }


class ClientSession:
    """A ``RegisterBackend`` for one client (a TCP connection, an RTU line, a CANopen bus):
    writes carry its identity to the guard; reads and writes use its word order, if it has
    its own (the second TCP port), else the meter's."""

    __slots__ = ("backend", "client", "word_order", "read_bits", "device_identification")

    def __init__(self, backend: MapBackend, client: Client, word_order: str | None = None):
        self.backend = backend
        self.client = client
        self.word_order = word_order
        self.read_bits = backend.read_bits
        self.device_identification = backend.device_identification

    def read_registers(self, table: RegisterTableName, address: int, count: int) -> list[int]:
        return self.backend.read_registers(table, address, count, self.word_order)

    def write_coils(self, address: int, values: list[bool]) -> Future | None:
        return self.backend.write_coils(address, values, self.client)

    def write_registers(self, address: int, values: list[int]) -> Future | None:
        return self.backend.write_registers(address, values, self.client, self.word_order)


def _live_status(control: MeterControl) -> int:
    """The control's live status word (a control without one: its snapshot's)."""
    status = getattr(control, "status", None)
    if status is not None:
        return int(status)
    snap = control.snapshot
    return snap.status if snap is not None else int(Status.NO_DATA)
