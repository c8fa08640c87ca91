"""The meter's settings: the DIP switches and configuration of a PM-4324, as one TOML file.

A real PM-4324 reads its DIP switches once at power-up; here the same facts come from one
file, validated whole before the meter starts. Every error names the file, the key, the bad
value and what is allowed (``SettingsError``), so a user never has to read a traceback.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from pm4324.config.alarm_settings import (
    AlarmRule,
    RelayConfig,
    StoreSettings,
    alarm_problem,
    read_alarms,
    read_relays,
    read_store,
)
from pm4324.config.ct_settings import PHASE_WIRINGS, CtSettings, read_cts
from pm4324.config.history_settings import HistorySettings, read_history
from pm4324.config.mqtt_settings import MqttSettings, read_mqtt
from pm4324.config.pq_settings import PqSettings, read_pq
from pm4324.config.security_settings import SecuritySettings, read_security

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


# ---------------------------------------------------------------------------------------------
# Loading and validation


def _allowed(values: tuple) -> str:
    return "must be one of " + ", ".join(str(v) for v in values)


class _Reader:
    """Walks a TOML table, recording which keys were used so unknown keys are reported."""

    def __init__(self, source: str, table: Mapping[str, Any], prefix: str = ""):
        self.source, self.table, self.prefix = source, table, prefix
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def error(self, name: str, value: Any, allowed: str) -> SettingsError:
        return SettingsError(self.source, self.key(name), value, allowed)

    def get(self, name: str, default: Any) -> Any:
        self.used.add(name)
        return self.table.get(name, default)

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value
        ):
            raise self.error(name, value, f"must be a number from {lo:g} to {hi:g}")
        if not lo <= value <= hi:
            raise self.error(name, value, f"must be from {lo:g} to {hi:g}")
        return float(value)

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.error(name, value, f"must be a whole number from {lo} to {hi}")
        return value

    def choice(self, name: str, default: Any, values: tuple) -> Any:
        value = self.get(name, default)
        if isinstance(value, bool) or value not in values:
            raise self.error(name, value, _allowed(values))
        return value

    def text(self, name: str, default: str) -> str:
        value = self.get(name, default)
        if not isinstance(value, str):
            raise self.error(name, value, "must be a string")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise self.error(name, value, "must be true or false")
        return value

    def sub(self, name: str) -> _Reader:
        value = self.get(name, {})
        if not isinstance(value, Mapping):
            raise self.error(name, value, "must be a table")
        return _Reader(self.source, value, f"{self.key(name)}.")

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.error(unknown[0], self.table[unknown[0]], "is not a known setting")


def _numbered_tables(r: _Reader, name: str, count: int) -> dict[int, _Reader]:
    """Read a table of sub-tables keyed "1".."count" (e.g. [meters.3])."""
    outer = r.sub(name)
    result = {}
    for k in list(outer.table):
        if not (isinstance(k, str) and k.isdigit() and 1 <= int(k) <= count):
            raise outer.error(k, outer.table[k], f"must be numbered 1 to {count}")
        result[int(k)] = outer.sub(k)
    outer.finish()
    return result


def _read_main(r: _Reader, default: MainSettings) -> MainSettings:
    main = MainSettings(
        pt_ratio=r.number("pt_ratio", default.pt_ratio, 0.01, 655.35),
        nominal_voltage_v=r.number("nominal_voltage_v", default.nominal_voltage_v, 10, 500_000),
        nominal_frequency_hz=r.choice(
            "nominal_frequency_hz", default.nominal_frequency_hz, (50, 60, 50.0, 60.0)
        ),
    )
    r.finish()
    return replace(main, nominal_frequency_hz=float(main.nominal_frequency_hz))


def _read_meter(r: _Reader, ct_input: str) -> MeterSettings:
    wiring = Wiring(r.choice("wiring", "3P4W-3CT", tuple(w.value for w in Wiring)))
    if "ct_type_a" in r.table and "ct_ratio" in r.table:
        raise r.error("ct_ratio", r.table["ct_ratio"], "give either ct_type_a or ct_ratio, not both")
    if ct_input == "333mV" and "ct_type_a" in r.table:
        raise r.error("ct_type_a", r.table["ct_type_a"],
                      'names a factory clip-on CT; with ct_input = "333mV" give the CT\'s rated'
                      " primary current (the amperes at which it gives 333 mV) as ct_ratio")
    if "ct_ratio" in r.table:
        ct_ratio = r.number("ct_ratio", 100, 1, 65535)
    else:
        ct_ratio = float(r.choice("ct_type_a", 100, CT_TYPES_A))
    phases = r.get("circuit_phases", ["a", "b", "c"])
    if (
        not isinstance(phases, list)
        or len(phases) != 3
        or any(p not in PHASES for p in phases)
    ):
        raise r.error("circuit_phases", phases, 'must be a list of three of "a", "b", "c"')
    if wiring.value not in PHASE_WIRINGS and "circuit_phases" in r.table:
        if list(phases) != ["a", "b", "c"]:
            raise r.error("circuit_phases", phases, "applies only to wirings "
                          + " and ".join(PHASE_WIRINGS))
    name = _label(r, "name", r.get("name", ""))
    ct_names = r.get("ct_names", ["", "", ""])
    if not (isinstance(ct_names, list) and len(ct_names) == 3):
        raise r.error("ct_names", ct_names, 'must be a list of three labels, e.g. ["Lift", "", ""]')
    for label in ct_names:
        _label(r, "ct_names", label)
    r.finish()
    return MeterSettings(wiring=wiring, ct_ratio=ct_ratio, circuit_phases=tuple(phases),
                         name=name, ct_names=tuple(ct_names))


MAX_LABEL = 64


def _label(r: _Reader, key: str, value: Any) -> str:
    """A label: text up to 64 characters, no control characters."""
    if not isinstance(value, str) or len(value) > MAX_LABEL or any(ord(c) < 32 for c in value):
        raise r.error(key, value, f"must be text of at most {MAX_LABEL} characters, one line")
    return value


def _read_calibration(r: _Reader) -> Calibration:
    cal = Calibration(
        gain=r.number("gain", 1.0, 0.5, 2.0),
        offset=r.number("offset", 0.0, -1e3, 1e3),
        phase_deg=r.number("phase_deg", 0.0, -10.0, 10.0),
    )
    r.finish()
    return cal


def _read_replay(r: _Reader, n_mains: int) -> ReplaySettings:
    valid = set(input_names(n_mains))
    primary = r.flag("primary", True)
    inputs_r = r.sub("inputs")
    inputs = {}
    for name, spec in inputs_r.table.items():
        if name not in valid:
            raise inputs_r.error(
                name, spec, "is not a meter input; use V1a..V1c" + (", V2a..V2c" if n_mains == 2
                else "") + " or CT1..CT24"
            )
        if isinstance(spec, str):
            inputs_r.used.add(name)
            inputs[name] = ReplayChannel(spec)
            continue
        cr = inputs_r.sub(name)
        channel = cr.text("channel", "")
        if not channel:
            raise cr.error("channel", channel, "must name a column of the recording")
        scale = cr.number("scale", 1.0, -1e9, 1e9)
        cr.finish()
        inputs[name] = ReplayChannel(channel, scale)
    inputs_r.finish()
    r.finish()
    return ReplaySettings(inputs=inputs, primary=primary)


def input_names(n_mains: int) -> list[str]:
    """The meter's analogue inputs, as named in replay maps and docs."""
    volts = [f"V{m}{p}" for m in range(1, n_mains + 1) for p in PHASES]
    return volts + [f"CT{k}" for k in range(1, N_CTS + 1)]


def parse_settings(data: Mapping[str, Any], source: str = "<settings>") -> Settings:
    r = _Reader(source, data)
    model = r.choice("model", "PM-4324A", MODELS)
    n_mains = 2 if model == "PM-4324A" else 1
    fs = r.number("sample_rate_hz", 12800.0, 1000.0, 200_000.0)
    ct_input = r.choice("ct_input", "clip-on", tuple(CT_INPUTS))

    main_tables = _numbered_tables(r, "mains", 2)
    if n_mains == 1 and 2 in main_tables:
        raise SettingsError(source, "mains.2", dict(main_tables[2].table), "only PM-4324A has a second main")
    mains = tuple(
        _read_main(main_tables[m], MainSettings()) if m in main_tables else MainSettings()
        for m in range(1, n_mains + 1)
    )

    meter_tables = _numbered_tables(r, "meters", N_METERS)
    meters = tuple(
        _read_meter(meter_tables[m], ct_input) if m in meter_tables else MeterSettings()
        for m in range(1, N_METERS + 1)
    )
    cts, meters = read_cts(_numbered_tables(r, "cts", N_CTS), meters)

    cal_r = r.sub("calibration")
    v_tables = _numbered_tables(cal_r, "voltage", 3 * n_mains)
    i_tables = _numbered_tables(cal_r, "current", N_CTS)
    cal_r.finish()
    cal_v = tuple(
        _read_calibration(v_tables[k]) if k in v_tables else Calibration() for k in range(1, 7)
    )
    cal_i = tuple(
        _read_calibration(i_tables[k]) if k in i_tables else Calibration()
        for k in range(1, N_CTS + 1)
    )

    mb = r.sub("modbus")
    modbus = ModbusSettings(
        address=mb.integer("address", 1, 1, 247),
        baud=mb.choice("baud", 19200, BAUD_RATES),
        data_format=mb.choice("data_format", "N81", DATA_FORMATS),
        word_order=mb.choice("word_order", "low-first", WORD_ORDERS),
        tcp_listen=_listen(mb, "tcp_listen", "127.0.0.1:5020"),
        tcp_enabled=mb.flag("tcp_enabled", True),
        serial_port=mb.text("serial_port", ""),
        tcp_listen_other_order=_listen(mb, "tcp_listen_other_order", "", optional=True),
        other_word_order=mb.choice("other_word_order", "high-first", WORD_ORDERS),
    )
    mb.finish()

    co = r.sub("canopen")
    canopen = CanopenSettings(
        node_id=co.integer("node_id", 1, 1, 127),
        bitrate=co.choice("bitrate", 125_000, CAN_BITRATES),
        interface=co.text("interface", ""),
        channel=co.text("channel", ""),
    )
    co.finish()

    replay = _read_replay(r.sub("replay"), n_mains)
    relays = read_relays(r.sub("relays"))
    alarms = read_alarms(r, n_mains)
    store = read_store(r.sub("store"))
    history = read_history(r.sub("history"))
    mqtt = read_mqtt(r.sub("mqtt"))
    pq = read_pq(r.sub("pq"))
    security = read_security(r.sub("security"))
    r.finish()
    settings = Settings(
        model=model,
        sample_rate_hz=fs,
        mains=mains,
        meters=meters,
        calibration_v=cal_v,
        calibration_i=cal_i,
        cts=cts,
        modbus=modbus,
        canopen=canopen,
        replay=replay,
        relays=relays,
        alarms=alarms,
        store=store,
        ct_input=ct_input,
        history=history,
        mqtt=mqtt,
        pq=pq,
        security=security,
        source_path=source,
    )
    validate(settings)
    return settings


def _listen(r: _Reader, name: str, default: str, optional: bool = False) -> str:
    value = r.text(name, default)
    if optional and not value:
        return value
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise r.error(name, value, 'must be "HOST:PORT", e.g. "127.0.0.1:5020"')
    return value


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


def load_settings(path: str | Path | None) -> Settings:
    """Load and validate a settings file; None gives the documented defaults."""
    if path is None:
        return Settings()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsFileError(str(p), file_problem("settings file", p, exc, "--settings")) \
            from None
    return parse_settings(data, str(p))
