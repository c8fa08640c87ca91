"""One member of a truth-level fleet as the interfaces see a meter (``MeterControl``).

Its snapshot is built from the group's batch arrays only when someone asks (a Modbus read,
a listener): 10,000 members cost nothing per second until they are read. Its energies are
the fleet's registers (fleet/store.py) as of the published second; its writes (relays,
energy resets, CT ratios) change the fleet's registers or its live settings and return
the fleet's commit future, so the protocol servers answer once they are on disk.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from pm4324.config.settings import N_CTS, Settings, SettingsError, validate
from pm4324.device.powerup import no_data_snapshot
from pm4324.device.relays import RelayModeError
from pm4324.registers.backend import AccessError, ExceptionCode
from pm4324.registers.map_backend import MapBackend
from pm4324.registers.table import MAX_BITS, MAX_REGISTERS, RegisterMap
from pm4324.security.guard import Guard
from pm4324.snapshot import AlarmStatus, CtValues, Energies, MainValues, MeterValues, Snapshot

if TYPE_CHECKING:
    from pm4324.fleet.clock import TruthFleet

NO_ALARMS = AlarmStatus()
NO_HARMONICS = np.full((N_CTS, 51), np.nan)  # the physics level does not ship them


class FleetMember:
    """A ``registers.backend.MeterControl`` over one member of a ``TruthFleet``."""

    def __init__(self, fleet: TruthFleet, index: int, settings: Settings):
        self.fleet = fleet
        self.index = index
        self.key = fleet.config.members[index].key
        self._settings = settings
        self._installed = settings  # the CT ratios the scenario's currents are wired to
        self._listeners: list[Callable[[Snapshot], None]] = []
        self._cache: tuple[tuple, Snapshot] | None = None
        self._lock = threading.Lock()
        self.version = 0  # bumped by every write: a cached snapshot is then rebuilt

    # -- MeterControl ----------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def status(self) -> int:
        return self.fleet.status_of(self.index)

    @property
    def relays(self) -> tuple[bool, bool]:
        r = self.fleet.registers.relays[self.index]
        return bool(r[0]), bool(r[1])

    @property
    def alarm_status(self) -> AlarmStatus:
        return NO_ALARMS

    @property
    def snapshot(self) -> Snapshot:
        """The published second (the same object until the next one or a write)."""
        key = (self.fleet.published_k, self.version, id(self._settings))
        cached = self._cache
        if cached is not None and cached[0] == key:
            return cached[1]
        with self._lock:
            cached = self._cache
            if cached is None or cached[0] != key:
                self._cache = cached = (key, self._build())
            return cached[1]

    def add_listener(self, callback: Callable[[Snapshot], None]) -> None:
        self._listeners.append(callback)
        self.fleet.listened.add(self.index)

    def set_relay(self, index: int, closed: bool) -> Future | None:
        if self._settings.relays.relays[index].mode == "alarm":
            raise RelayModeError(f"relay {index + 1} is in alarm mode")
        with self.fleet.registers.lock:
            self.fleet.registers.relays[self.index, index] = bool(closed)
        self.version += 1
        return self.fleet.request_commit()

    def reset_energy(self, meter: int | None) -> Future | None:
        self.fleet.reset_energy(self.index, meter)
        self.version += 1
        return self.fleet.request_commit()

    def acknowledge_alarms(self, relay: int | None) -> Future | None:
        return None  # no alarm rules at the truth level: nothing is ever latched

    def apply_settings(self, new: Settings) -> Future | None:
        """CT ratios and the word order change live; the rest is the fleet file's."""
        validate(new)
        old = self._settings
        same = replace(new, meters=tuple(replace(m, ct_ratio=o.ct_ratio)
                                         for m, o in zip(new.meters, old.meters)),
                       modbus=old.modbus)
        if same != old:
            raise SettingsError(self.key, "settings", "(write)", "a fleet member at the truth "
                                "level changes only its CT ratios and word order live; the "
                                "rest comes from the fleet file")
        self._settings = new
        self.fleet.set_gain(self.index, np.repeat(
            [m.ct_ratio / o.ct_ratio for m, o in zip(new.meters, self._installed.meters)], 3),
            np.repeat([m.rated_current_a for m in new.meters], 3))
        self.version += 1
        return None  # settings of a member are not saved: the fleet file says them at start

    # -- building the snapshot -------------------------------------------------------------

    def _build(self) -> Snapshot:
        fleet, n = self.fleet, self.index
        ct_e, meter_e = fleet.energies_of(n)
        sec, row = fleet.second_of(n)
        if sec is not None and row in sec.overrides:  # a member with active faults
            sec, row = sec.overrides[row], 0
        if sec is None:
            from pm4324.device.energy import EnergyRegisters

            regs = [EnergyRegisters(N_CTS), EnergyRegisters(8)]
            snap = no_data_snapshot(self._settings, *regs, self.relays, NO_ALARMS,
                                    fleet.start_time, self.status)
            return replace(snap, ct_energy=ct_e, meter_energy=meter_e)
        c, m = sec.ct, sec.meter
        if sec.per_member:  # the physics level: the engine's values and flags
            ct = CtValues(**{k: v[row] for k, v in c.items()}, v_harmonics=NO_HARMONICS,
                          i_harmonics=NO_HARMONICS, flags=sec.ct_flags[row])
            meter = MeterValues(**{k: v[row] for k, v in m.items()},
                                flags=sec.meter_flags[row])
            main = MainValues(**{k: v[row] for k, v in sec.main.items()})
        else:
            group = fleet.groups[fleet.group_of[n]].truth
            vh, ih = group.harmonics(sec, row)

            def row_of(x: np.ndarray) -> np.ndarray:
                return x[row] if x.ndim == 2 else x

            ct = CtValues(**{k: row_of(v) for k, v in c.items()}, v_harmonics=vh,
                          i_harmonics=ih, flags=group.unused_flags)
            meter = MeterValues(**{k: row_of(v) for k, v in m.items()},
                                flags=np.zeros(8, dtype=np.int64))
            main = MainValues(**sec.main)
        return Snapshot(seq=sec.k, time=fleet.start_time + sec.k + 1, settings=self._settings,
                        ct=ct, meter=meter, main=main, ct_energy=ct_e, meter_energy=meter_e,
                        relays=self.relays, duration_s=1.0, alarms=NO_ALARMS,
                        status=self.status)

    def publish(self) -> None:
        """Call the listeners with the new second (the fleet's clock thread)."""
        if self._listeners:
            snap = self.snapshot
            for listener in self._listeners:
                listener(snap)


def energies(values: np.ndarray) -> tuple[Energies, Energies]:
    """(32, 7) register values in Wh -> the CT and Meter ``Energies``."""
    ct, meter = values[:N_CTS], values[N_CTS:]
    return (Energies(*(ct[:, k] for k in range(7))), Energies(*(meter[:, k] for k in range(7))))


class _Quiet:
    """The member as the backend's control, without its listener: the image is built when
    read (at most once a second per member), not every second for every member."""

    def __init__(self, member: FleetMember):
        self._member = member

    def __getattr__(self, name: str):
        return getattr(self._member, name)

    def add_listener(self, callback: Callable[[Snapshot], None]) -> None:
        pass


class MemberBackend(MapBackend):
    """The register map over a fleet member, building its image when it is read."""

    def __init__(self, member: FleetMember, register_map: RegisterMap, guard: Guard):
        super().__init__(_Quiet(member), register_map, guard)  # type: ignore[arg-type]
        self.member = member

    def read_bits(self, table, address: int, count: int) -> list[bool]:
        if not 1 <= count <= MAX_BITS:
            raise AccessError(ExceptionCode.ILLEGAL_DATA_VALUE, f"quantity {count}")
        return self._current().read(table, address, count)

    def read_registers(self, table, address: int, count: int,
                       word_order: str | None = None) -> list[int]:
        if not 1 <= count <= MAX_REGISTERS:
            raise AccessError(ExceptionCode.ILLEGAL_DATA_VALUE, f"quantity {count}")
        return self._current(word_order).read(table, address, count)
