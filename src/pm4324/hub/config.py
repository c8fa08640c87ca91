"""HUB.toml: the meters a hub polls, how, and where their history goes (docs/hub.md).

Every error names the file, the key, the bad value and what is allowed, like the meter's
settings file, and `pm4324 hub` turns it into one line and exit code 2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pm4324.config.mqtt_settings import MqttSettings
from pm4324.config.settings import BAUD_RATES, DATA_FORMATS, WORD_ORDERS, SettingsError
from pm4324.config.toml_file import check_keys, number, read_toml, whole_number

KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class MeterConfig:
    key: str  # the meter's name in the history
    transport: str  # "tcp", "rtu" or "canopen"
    address: str  # HOST:PORT, serial device, or INTERFACE:CHANNEL
    unit: int = 1  # Modbus unit id, or CANopen node-ID
    poll_s: float = 1.0
    gap_s: float = 0.0  # silence longer than this is a gap; 0 = 3 polls (at least 2.5 s)
    timeout_s: float = 1.0
    retries: int = 1
    pipeline: int = 4  # Modbus TCP requests in flight on the connection (1 = one at a time)
    word_order: str = "low-first"
    baud: int = 19200
    data_format: str = "N81"
    meters: tuple[int, ...] = tuple(range(1, 9))  # which Meters (and their CTs) to read
    names: dict = field(default_factory=dict)  # {"meters": {"1": ...}, "cts": {"7": ...}}
    web: str = ""  # the meter's `run --http` URL: gaps are backfilled from its history

    @property
    def line(self) -> str:
        """Meters on one line are polled one request at a time (an RS-485 line, a CAN bus)."""
        return f"{self.transport}:{self.address}" if self.transport != "tcp" else f"tcp:{self.key}"


@dataclass(frozen=True)
class HubConfig:
    history: str  # file (relative to HUB.toml) or postgresql:// URL
    time_zone: str = ""
    raw_days: float = 7.0
    flush_s: float = 60.0
    max_backoff_s: float = 60.0
    meters: tuple[MeterConfig, ...] = ()
    source: str = "<hub>"
    mqtt: MqttSettings = MqttSettings()  # publish every meter's readings (docs/mqtt.md)
    base: str = "."  # the directory of HUB.toml


def _err(src: str, key: str, value: Any, allowed: str) -> SettingsError:
    return SettingsError(src, key, value, allowed)


def _names(src: str, raw: Any, prefix: str) -> dict:
    if not isinstance(raw, dict) or set(raw) - {"meters", "cts"}:
        raise _err(src, prefix + "names", raw, 'must be { meters = { "1" = "..." }, cts = { "7" = "..." } }')
    out = {}
    for group, count in (("meters", 8), ("cts", 24)):
        table = raw.get(group, {})
        if not isinstance(table, dict) or not all(
                str(k).isdigit() and 1 <= int(k) <= count and isinstance(v, str) and len(v) <= 64
                for k, v in table.items()):
            raise _err(src, f"{prefix}names.{group}", table,
                       f"must map numbers 1..{count} to labels of at most 64 characters")
        out[group] = {str(k): v for k, v in table.items()}
    return out


def _meter(src: str, t: dict, n: int) -> MeterConfig:
    p = f"meters.{n}."
    if not isinstance(t, dict):
        raise _err(src, f"meters.{n}", t, "must be a table [[meters]]")
    check_keys(src, t, {"key", "tcp", "rtu", "canopen", "unit", "node", "poll_s", "gap_s", "timeout_s",
                      "retries", "pipeline", "word_order", "baud", "format", "meters", "names", "web"}, p)
    key = t.get("key")
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise _err(src, p + "key", key, "must name the meter: letters, digits, _ . - (1..64)")
    where = [k for k in ("tcp", "rtu", "canopen") if k in t]
    if len(where) != 1:
        raise _err(src, p + "tcp", where, "give exactly one of tcp, rtu, canopen")
    transport = where[0]
    address = t[transport]
    if not isinstance(address, str) or not address:
        raise _err(src, p + transport, address, "must be HOST:PORT, a serial device or "
                   "INTERFACE:CHANNEL")
    if transport == "canopen":
        unit = whole_number(src, t, "node", 1, 1, 127, p)
    else:
        unit = whole_number(src, t, "unit", 1, 0 if transport == "tcp" else 1, 247 if transport == "rtu"
                        else 255, p)
    word_order = t.get("word_order", "low-first")
    if word_order not in WORD_ORDERS:
        raise _err(src, p + "word_order", word_order, "must be one of " + ", ".join(WORD_ORDERS))
    baud = t.get("baud", 19200)
    if baud not in BAUD_RATES:
        raise _err(src, p + "baud", baud, "must be one of " + ", ".join(map(str, BAUD_RATES)))
    fmt = t.get("format", "N81")
    if fmt not in DATA_FORMATS:
        raise _err(src, p + "format", fmt, "must be one of " + ", ".join(DATA_FORMATS))
    meters = t.get("meters", list(range(1, 9)))
    if not (isinstance(meters, list) and meters and all(
            isinstance(m, int) and not isinstance(m, bool) and 1 <= m <= 8 for m in meters)):
        raise _err(src, p + "meters", meters, "must be a list of Meter numbers 1..8")
    web = t.get("web", "")
    if not isinstance(web, str) or (web and not re.fullmatch(r"https?://[^\s/]+/?", web)):
        raise _err(src, p + "web", web, "must be the meter's dashboard URL, e.g. http://10.0.0.21:8080")
    return MeterConfig(key, transport, address, unit,
                       poll_s=number(src, t, "poll_s", 1.0, 0.05, 86400, p),
                       gap_s=number(src, t, "gap_s", 0.0, 0.0, 86400, p),
                       timeout_s=number(src, t, "timeout_s", 1.0, 0.05, 60, p),
                       retries=whole_number(src, t, "retries", 1, 0, 10, p),
                       pipeline=whole_number(src, t, "pipeline", 4, 1, 16, p),
                       word_order=word_order, baud=baud, data_format=fmt,
                       meters=tuple(sorted(set(meters))), names=_names(src, t.get("names", {}), p),
                       web=web.rstrip("/"))


def parse_hub(data: dict, source: str = "<hub>", base: Path | None = None) -> HubConfig:
    check_keys(source, data, {"hub", "meters", "mqtt"}, "")
    hub = data.get("hub", {})
    if not isinstance(hub, dict):
        raise _err(source, "hub", hub, "must be a table [hub]")
    check_keys(source, hub, {"history", "time_zone", "raw_days", "flush_s", "max_backoff_s"}, "hub.")
    history = hub.get("history", "hub-history.db")
    if not isinstance(history, str) or not history:
        raise _err(source, "hub.history", history, "must be a file name or a postgresql:// URL")
    if not history.startswith(("postgresql://", "postgres://")) and base is not None:
        path = Path(history).expanduser()
        history = str(path if path.is_absolute() else base / path)
    tz = hub.get("time_zone", "")
    if not isinstance(tz, str):
        raise _err(source, "hub.time_zone", tz, "must be an IANA zone name, e.g. Europe/Berlin")
    raw = data.get("meters", [])
    if not isinstance(raw, list) or not raw:
        raise _err(source, "meters", raw, "must list at least one [[meters]] table")
    meters = tuple(_meter(source, t, n) for n, t in enumerate(raw, start=1))
    keys = [m.key for m in meters]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup:
        raise _err(source, "meters.key", dup, "must be unique")
    seen: dict[tuple[str, int], str] = {}
    for m in meters:
        if m.transport != "tcp":
            other = seen.setdefault((m.line, m.unit), m.key)
            if other != m.key:
                raise _err(source, f"meters.{m.key}.unit", m.unit, f"is used by {other} on the same line")
            lines = {x.baud for x in meters if x.line == m.line}
            if len(lines) > 1:
                raise _err(source, f"meters.{m.key}.baud", m.baud, "meters on one line share one baud rate")
    return HubConfig(history=history, time_zone=tz,
                     raw_days=number(source, hub, "raw_days", 7.0, 0, 3660, "hub."),
                     flush_s=number(source, hub, "flush_s", 60.0, 1, 3600, "hub."),
                     max_backoff_s=number(source, hub, "max_backoff_s", 60.0, 1, 3600, "hub."),
                     meters=meters, source=source, mqtt=_mqtt(data, source),
                     base=str(base or Path.cwd()))


def _mqtt(data: dict, source: str) -> MqttSettings:
    """``[mqtt]`` with the meter's own validation and error wording (docs/mqtt.md)."""
    from pm4324.config.settings_parse import parse_settings

    if "mqtt" not in data:
        return MqttSettings()
    return parse_settings({"mqtt": data["mqtt"]}, source).mqtt


def load_hub(path: str | Path) -> HubConfig:
    p = Path(path)
    return parse_hub(read_toml(p), str(p), p.resolve().parent)
