"""The meter's settings: the DIP switches and configuration of a PM-4324, as one TOML file.

A real PM-4324 reads its DIP switches once at power-up; here the same facts come from one
file, validated whole before the meter starts. Every error names the file, the key, the bad
value and what is allowed (``SettingsError``), so a user never has to read a traceback.

This module is the model: the ``Settings`` dataclasses, their constants and errors, and the
checks that span several keys (``validate``, also run by every changed copy). Reading a TOML
file into it is ``config.settings_parse`` (``parse_settings``, ``load_settings``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from pm4324.config.alarm_settings import AlarmRule, RelayConfig, StoreSettings, alarm_problem
from pm4324.config.ct_settings import PHASE_WIRINGS, CtSettings
from pm4324.config.history_settings import HistorySettings
from pm4324.config.mqtt_settings import MqttSettings
from pm4324.config.pq_settings import PqSettings
from pm4324.config.security_settings import SecuritySettings

N_METERS = 8
CTS_PER_METER = 3
N_CTS = N_METERS * CTS_PER_METER

MODELS = ("PM-4324", "PM-4324A")
CT_TYPES_A = (60, 100, 200, 300, 400)
BAUD_RATES = (9600, 19200, 38400, 115200)
DATA_FORMATS = ("N81", "N82", "E81", "E82", "O81", "O82")
CAN_BITRATES = (125_000, 250_000, 500_000, 1_000_000)
WORD_ORDERS = ("low-first", "high-first")
PHASES = ("a", "b", "c")

# Our CT model: a factory CT of type N amperes is an N A : 1 A transformer as seen by the
# meter's input (the real mA secondary is hidden behind the input stage). The current input
# unit is therefore "secondary amperes, 1.0 = rated", and CT ratio = rated primary amperes.
CT_SECONDARY_RATED_A = 1.0
# CT input types [ours]: "clip-on" (PM-4324/PM-4324A: the factory mA clip-on CTs, modelled as
# above) or "333mV" (the PM-4324P variant: any CT with a 333 mV secondary at its rated current,
# input in volts). Value: the input at rated current, in the input's unit (A or V).
CT_INPUTS = {"clip-on": CT_SECONDARY_RATED_A, "333mV": 0.333}


class Wiring(str, Enum):
    """Wiring mode of one Meter (three CTs). The value is the vendor's name."""

    W3P4W_3CT = "3P4W-3CT"
    W3P3W_3CT = "3P3W-3CT"
    W3P3W_2CT = "3P3W-2CT"
    W1P3W_2CT = "1P3W-2CT"
    W1P2W_1CT = "1P2W-1CT"

    @property
    def code(self) -> int:
        """Wiring code 0..4 as served in the register map ([ours]: the vendor order is unknown)."""
        return list(Wiring).index(self)

    @classmethod
    def from_code(cls, code: int) -> Wiring:
        return list(Wiring)[code]

    @property
    def used_cts(self) -> tuple[bool, bool, bool]:
        """Which of the Meter's CTs (a, b, c) this wiring measures with."""
        return {"3P3W-2CT": (True, False, True),
                "1P3W-2CT": (True, True, False)}.get(self.value, (True, True, True))


class SettingsError(ValueError):
    """A settings file (or a settings change) is invalid; the message says exactly why."""

    def __init__(self, source: str, key: str, value: Any, allowed: str):
        self.source, self.key, self.value, self.allowed = source, key, value, allowed
        super().__init__(f"{source}: {key} = {value!r}: {allowed}")


class SettingsFileError(SettingsError):
    """The settings file itself cannot be used (missing, a directory, unreadable, not TOML)."""

    def __init__(self, path: str, problem: str):
        ValueError.__init__(self, problem)
        self.source, self.key, self.value, self.allowed = path, "", path, problem


def file_problem(what: str, path: Path, exc: Exception, option: str) -> str:
    """One plain sentence: which file, what is wrong with it, what to do."""
    if isinstance(exc, FileNotFoundError):
        return f"{what} {path} does not exist: check the path given to {option}"
    if isinstance(exc, IsADirectoryError):
        return f"{what} {path} is a directory: give {option} the path of a TOML file"
    if isinstance(exc, PermissionError):
        return f"{what} {path} cannot be read (permission denied): check its owner and mode"
    if isinstance(exc, UnicodeDecodeError):
        return f"{what} {path} is not a text file (not UTF-8): give {option} a TOML file"
    if isinstance(exc, tomllib.TOMLDecodeError):
        return f"{what} {path} is not valid TOML ({exc}): fix that line"
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"{what} {path} cannot be read ({reason})"


@dataclass(frozen=True)
class MainSettings:
    """One main voltage input (PM-4324A has two)."""

    pt_ratio: float = 1.0
    nominal_voltage_v: float = 230.0  # primary, line-to-neutral
    nominal_frequency_hz: float = 50.0


@dataclass(frozen=True)
class MeterSettings:
    """One Meter: three CTs (a, b, c) with one wiring mode and one CT ratio."""

    wiring: Wiring = Wiring.W3P4W_3CT
    ct_ratio: float = 100.0  # rated primary amperes per secondary ampere
    # 1P2W-1CT and 3P4W-3CT: which phase voltage of the main each CT is measured against
    # (3P4W-3CT: [cts.N] phase; the default is the CT's position a, b, c).
    circuit_phases: tuple[str, str, str] = ("a", "b", "c")
    ct_reverse: tuple[bool, bool, bool] = (False, False, False)  # [cts.N] reverse: inverted
    name: str = ""  # label shown instead of "Meter m" ("Shop 3"); "" = none
    ct_names: tuple[str, str, str] = ("", "", "")  # labels of CTs a, b, c ("Shop 3 – lighting")

    @property
    def rated_current_a(self) -> float:
        return self.ct_ratio * CT_SECONDARY_RATED_A


@dataclass(frozen=True)
class Calibration:
    """Per-input correction: value = gain * (raw - offset), delayed by phase_deg at the
    nominal frequency (positive = the input lags and is advanced by the correction)."""

    gain: float = 1.0
    offset: float = 0.0
    phase_deg: float = 0.0


@dataclass(frozen=True)
class ModbusSettings:
    address: int = 1
    baud: int = 19200
    data_format: str = "N81"
    word_order: str = "low-first"
    tcp_listen: str = "127.0.0.1:5020"
    tcp_enabled: bool = True
    serial_port: str = ""
    # a second TCP listener whose 32-bit values use this word order, whatever word_order says
    # (for a master that needs the other order without changing it for everyone); "" = off
    tcp_listen_other_order: str = ""
    other_word_order: str = "high-first"

    @property
    def parity(self) -> str:
        return self.data_format[0]

    @property
    def stop_bits(self) -> int:
        return int(self.data_format[2])


@dataclass(frozen=True)
class CanopenSettings:
    node_id: int = 1
    bitrate: int = 125_000
    interface: str = ""  # python-can interface ("virtual", "udp_multicast", "socketcan"); "" = off
    channel: str = ""


@dataclass(frozen=True)
class ReplayChannel:
    """Maps one meter input to one column of a recording: input = scale * column."""

    channel: str
    scale: float = 1.0


@dataclass(frozen=True)
class ReplaySettings:
    """How a recording's columns feed the meter's inputs (see docs/replay.md)."""

    inputs: Mapping[str, ReplayChannel] = field(default_factory=dict)
    # True: the recording holds primary values (volts on the line, amperes in the cable) and
    # the meter's PT/CT ratios are undone before metering. False: terminal (secondary) values.
    primary: bool = True


@dataclass(frozen=True)
class Settings:
    model: str = "PM-4324A"
    sample_rate_hz: float = 12800.0
    mains: tuple[MainSettings, ...] = (MainSettings(), MainSettings())
    meters: tuple[MeterSettings, ...] = tuple(MeterSettings() for _ in range(N_METERS))
    calibration_v: tuple[Calibration, ...] = tuple(Calibration() for _ in range(6))
    calibration_i: tuple[Calibration, ...] = tuple(Calibration() for _ in range(N_CTS))
    cts: tuple[CtSettings, ...] = tuple(CtSettings() for _ in range(N_CTS))  # wiring check
    modbus: ModbusSettings = ModbusSettings()
    canopen: CanopenSettings = CanopenSettings()
    replay: ReplaySettings = ReplaySettings()
    relays: RelayConfig = RelayConfig()
    alarms: tuple[AlarmRule, ...] = ()
    store: StoreSettings = StoreSettings()
    ct_input: str = "clip-on"  # a key of CT_INPUTS; "333mV" = the PM-4324P variant [ours]
    history: HistorySettings = HistorySettings()
    mqtt: MqttSettings = MqttSettings()
    pq: PqSettings = PqSettings()
    security: SecuritySettings = SecuritySettings()
    source_path: str = "<defaults>"

    @property
    def n_mains(self) -> int:
        return 2 if self.model == "PM-4324A" else 1

    def amperes_per_input(self, meter: int) -> float:
        """Primary amperes per unit of a CT input of 0-based Meter ``meter``: its rated
        current over the input at rated current (1 A clip-on, 0.333 V for 333 mV CTs)."""
        return self.meters[meter].rated_current_a / CT_INPUTS[self.ct_input]

    def main_of_ct(self, ct: int) -> int:
        """0-based main index serving 1-based CT number ``ct``."""
        return 0 if self.n_mains == 1 or ct <= 12 else 1

    def main_of_meter(self, meter: int) -> int:
        """0-based main index serving 1-based Meter number ``meter``."""
        return self.main_of_ct(3 * meter)

    # Changed copies, validated like a settings file (1-based numbers, as in the file).

    def with_meter(self, meter: int, **changes: Any) -> Settings:
        return _validated(replace(self, meters=_changed(self.meters, meter, changes)))

    def with_main(self, main: int, **changes: Any) -> Settings:
        return _validated(replace(self, mains=_changed(self.mains, main, changes)))

    def with_relay(self, relay: int, **changes: Any) -> Settings:
        relays = replace(self.relays, relays=_changed(self.relays.relays, relay, changes))
        return _validated(replace(self, relays=relays))

    def with_alarm(self, slot: int, **changes: Any) -> Settings:
        """Change rule ``slot``; slots past the last rule start as free slots."""
        padded = self.alarms + (AlarmRule(),) * max(0, slot - len(self.alarms))
        alarms = list(_changed(padded, slot, changes))
        while alarms and alarms[-1] == AlarmRule():  # trailing free slots are not kept
            alarms.pop()
        return _validated(replace(self, alarms=tuple(alarms)))


def _changed(items: tuple, number: int, changes: dict[str, Any]) -> tuple:
    """``items`` with item ``number`` (1-based) replaced by a changed copy."""
    return items[: number - 1] + (replace(items[number - 1], **changes),) + items[number:]


def _validated(settings: Settings) -> Settings:
    validate(settings)
    return settings


def input_names(n_mains: int) -> list[str]:
    """The meter's analogue inputs, as named in replay maps and docs."""
    volts = [f"V{m}{p}" for m in range(1, n_mains + 1) for p in PHASES]
    return volts + [f"CT{k}" for k in range(1, N_CTS + 1)]


# ---------------------------------------------------------------------------------------------
# Validation


def _allowed(values: tuple) -> str:
    return "must be one of " + ", ".join(str(v) for v in values)


def validate(s: Settings) -> None:
    """Checks that span several keys; also run after every settings change at run time."""
    src = s.source_path
    for m, meter in enumerate(s.meters, start=1):
        if not 1 <= meter.ct_ratio <= 65535:
            raise SettingsError(src, f"meters.{m}.ct_ratio", meter.ct_ratio, "must be from 1 to 65535")
    for k, main in enumerate(s.mains, start=1):
        if not 0.01 <= main.pt_ratio <= 655.35:
            raise SettingsError(src, f"mains.{k}.pt_ratio", main.pt_ratio, "must be from 0.01 to 655.35")
    for m, meter in enumerate(s.meters, start=1):
        if meter.wiring.value not in PHASE_WIRINGS and tuple(meter.circuit_phases) != PHASES:
            raise SettingsError(src, f"meters.{m}.circuit_phases", list(meter.circuit_phases),
                                "applies only to wirings " + " and ".join(PHASE_WIRINGS))
    if s.ct_input not in CT_INPUTS:
        raise SettingsError(src, "ct_input", s.ct_input, _allowed(tuple(CT_INPUTS)))
    if len(s.mains) != s.n_mains:
        raise SettingsError(src, "mains", len(s.mains), f"{s.model} has {s.n_mains} main(s)")
    problem = alarm_problem(s.relays, s.alarms, s.n_mains)
    if problem:
        raise SettingsError(src, *problem)


TERMINAL_RANGE_V = (10.0, 500.0)  # what the voltage inputs measure


def voltage_range_warnings(s: Settings) -> list[str]:
    """Mains whose nominal voltage at the terminals is outside the inputs' 10..500 V.

    A warning, not a refusal: the real meter accepts every PT ratio of 0.01..655.35 whatever
    the nominal, so a settings file or a register write a real meter takes is taken here too;
    the meter then flags ``Status.VOLTAGE_RANGE`` and logs an event.
    """
    lo, hi = TERMINAL_RANGE_V
    out = []
    for k, main in enumerate(s.mains, start=1):
        terminal = main.nominal_voltage_v / main.pt_ratio
        if not lo <= terminal <= hi:
            out.append(f"main {k}: nominal {main.nominal_voltage_v:g} V / PT ratio "
                       f"{main.pt_ratio:g} = {terminal:g} V at the terminals, outside the "
                       f"inputs' {lo:g}..{hi:g} V")
    return out

