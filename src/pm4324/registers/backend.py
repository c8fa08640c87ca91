"""The contract between the register map and the protocol servers.

Protocol servers (Modbus TCP/RTU) only move bytes; everything they serve comes through a
``RegisterBackend``. A backend answers each request from one register image, built from one
snapshot, so a read never mixes two seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Literal, Protocol

from pm4324.config.settings import Settings
from pm4324.snapshot import AlarmStatus, Snapshot

BitTable = Literal["coil", "discrete"]
RegisterTable = Literal["holding", "input"]


class ExceptionCode(IntEnum):
    """Modbus exception codes a backend may raise (Modbus Application Protocol V1.1b3 §7)."""

    ILLEGAL_FUNCTION = 1
    ILLEGAL_DATA_ADDRESS = 2
    ILLEGAL_DATA_VALUE = 3
    SERVER_DEVICE_FAILURE = 4


class AccessError(Exception):
    """A request the map refuses; the protocol layer turns it into a Modbus exception."""

    def __init__(self, code: ExceptionCode, message: str = ""):
        self.code = ExceptionCode(code)
        super().__init__(message or self.code.name)


class RegisterBackend(Protocol):
    def read_bits(self, table: BitTable, address: int, count: int) -> list[bool]: ...

    def read_registers(self, table: RegisterTable, address: int, count: int) -> list[int]: ...

    def write_coils(self, address: int, values: list[bool]) -> None: ...

    def write_registers(self, address: int, values: list[int]) -> None: ...

    def device_identification(self) -> dict[int, bytes]:
        """Objects for FC 0x2B/0x0E: 0 vendor, 1 product code, 2 revision, 3 URL, 4 name, 5 model."""
        ...


class MeterControl(Protocol):
    """What interfaces may ask of the running meter (implemented by ``device.meter.Meter``)."""

    @property
    def snapshot(self) -> Snapshot | None: ...

    @property
    def settings(self) -> Settings: ...

    def apply_settings(self, new: Settings) -> None:
        """Validate (raises SettingsError), swap atomically and save to the settings file."""
        ...

    def set_relay(self, index: int, closed: bool) -> None:
        """index 0 or 1; manual relay control. Raises ``device.relays.RelayModeError`` when
        that relay is in alarm mode (its rules switch it; CANopen: abort 0x08000022)."""
        ...

    @property
    def relays(self) -> tuple[bool, bool]: ...

    @property
    def alarm_status(self) -> AlarmStatus:
        """Alarm rule outputs and unacknowledged latches, as of now."""
        ...

    def acknowledge_alarms(self, relay: int | None) -> None:
        """Acknowledge the latched alarms of relay 1 or 2, or of both (None)."""
        ...

    def reset_energy(self, meter: int | None) -> None:
        """Zero the energy registers of one Meter (1..8, and its CTs) or of all (None);
        logged, and saved to the state store before it returns."""
        ...

    def add_listener(self, callback: Callable[[Snapshot], None]) -> None:
        """Call ``callback(snapshot)`` after each new snapshot, in the thread that measured
        it (``Meter.run``'s worker thread, not the protocols' event loop)."""
        ...
