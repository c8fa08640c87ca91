"""Reading a settings file: TOML tables into a validated ``Settings`` (``config.settings``).

Every key is read through ``_Reader``, which records which keys were used, so a misspelt key
is reported rather than silently ignored, and every error names the file, the key, the value
and what is allowed. The section modules (alarm_settings, ct_settings, ...) get the same
reader for their tables.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pm4324.config.alarm_settings import read_alarms, read_relays, read_store
from pm4324.config.ct_settings import PHASE_WIRINGS, read_cts
from pm4324.config.history_settings import read_history
from pm4324.config.mqtt_settings import read_mqtt
from pm4324.config.pq_settings import read_pq
from pm4324.config.security_settings import read_security
from pm4324.config.settings import (
    BAUD_RATES,
    CAN_BITRATES,
    CT_INPUTS,
    CT_TYPES_A,
    DATA_FORMATS,
    MODELS,
    N_CTS,
    N_METERS,
    PHASES,
    WORD_ORDERS,
    Calibration,
    CanopenSettings,
    MainSettings,
    MeterSettings,
    ModbusSettings,
    ReplayChannel,
    ReplaySettings,
    Settings,
    SettingsError,
    SettingsFileError,
    Wiring,
    _allowed,
    file_problem,
    input_names,
    validate,
)


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
