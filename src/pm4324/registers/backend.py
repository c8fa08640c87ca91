"""The contract between the register map and the protocol servers.

Protocol servers (Modbus TCP/RTU) only move bytes; everything they serve comes through a
``RegisterBackend``. A backend answers each request from one register image, built from one
snapshot, so a read never mixes two seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from enum import IntEnum
from typing import Literal, Protocol

from pm4324.config.settings import Settings
from pm4324.snapshot import AlarmStatus, Snapshot

ACK_WAIT_S = 0.05  # the longest a write's answer waits for its commit (device/commit.py)


def on_disk(future: Future | None) -> bool:
    """True once a write's commit is on disk (None: nothing to wait for); waits at most
    ACK_WAIT_S, in the caller's thread (never an event loop's)."""
    if future is None:
        return True
    try:
        return bool(future.result(timeout=ACK_WAIT_S))
    except Exception:  # TimeoutError, or a failed commit
        return False

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

    def write_coils(self, address: int, values: list[bool]) -> Future | None:
        """None, or a future that is True once the write is on disk (False: not saved):
        the server answers only then (protocols/modbus/pdu.py, ``Deferred``)."""
        ...

    def write_registers(self, address: int, values: list[int]) -> Future | None: ...

    def device_identification(self) -> dict[int, bytes]:
        """Objects for FC 0x2B/0x0E: 0 vendor, 1 product code, 2 revision, 3 URL, 4 name, 5 model."""
        ...


class MeterControl(Protocol):
    """What interfaces may ask of the running meter (implemented by ``device.meter.Meter``)."""

    @property
    def snapshot(self) -> Snapshot | None: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def status(self) -> int:
        """The live meter status word (snapshot.Status), also between two snapshots."""
        ...

    def apply_settings(self, new: Settings) -> Future | None:
        """Validate (raises SettingsError), swap atomically and save to the settings file."""
        ...

    def set_relay(self, index: int, closed: bool) -> Future | None:
        """index 0 or 1; manual relay control. Raises ``device.relays.RelayModeError`` when
        that relay is in alarm mode (its rules switch it; CANopen: abort 0x08000022)."""
        ...

    @property
    def relays(self) -> tuple[bool, bool]: ...

    @property
    def alarm_status(self) -> AlarmStatus:
        """Alarm rule outputs and unacknowledged latches, as of now."""
        ...

    def acknowledge_alarms(self, relay: int | None) -> Future | None:
        """Acknowledge the latched alarms of relay 1 or 2, or of both (None)."""
        ...

    def reset_energy(self, meter: int | None) -> Future | None:
        """Zero the energy registers of one Meter (1..8, and its CTs) or of all (None);
        logged. Like every write here, returns None or a future that is True once the
        change is on disk."""
        ...

    def add_listener(self, callback: Callable[[Snapshot], None]) -> None:
        """Call ``callback(snapshot)`` after each new snapshot, in the thread that measured
        it (``Meter.run``'s worker thread, not the protocols' event loop)."""
        ...
