"""FLEET.toml: many meters written compactly, and how the fleet exposes them (docs/fleet.md).

A ``[[meters]]`` table stands for ``count`` meters made from one settings file and one
scenario: "60 meters from building.toml, seeds 1-60, CT ratios varied" is

    [[meters]]
    key = "bldg-{n:03}"
    count = 60
    scenario = "building.toml"
    seeds = [1, 60]
    ct_ratios = [100, 200, 400]

Each member gets its own key, seed, CT ratio, identity (a meter id kept in the fleet's
store) and place on every exposure (TCP port, gateway unit id, RTU unit id, CANopen node
id), in the order of the tables. Every error names the file, the key, the bad value and
what is allowed, and ``pm4324 fleet`` turns it into one line and exit code 2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pm4324.config.mqtt_settings import MqttSettings
from pm4324.config.settings import BAUD_RATES, DATA_FORMATS, Settings, SettingsError
from pm4324.config.settings_parse import load_settings, parse_settings
from pm4324.config.toml_file import check_keys, number, read_toml, whole_number
from pm4324.sources.base import SourceError
from pm4324.sources.scenario import Scenario
from pm4324.sources.scenario_parse import load_scenario

KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_METERS = 100_000
GATEWAY_UNITS = 247  # unit ids 1..247 behind one gateway port
FIDELITIES = ("truth", "physics")
TCP_MODES = ("ports", "gateway", "off")


@dataclass(frozen=True)
class MemberConfig:
    """One meter of the fleet."""

    index: int  # 0-based position in the fleet: its place on every exposure
    key: str
    settings: Settings  # with this member's CT ratio
    scenario: Scenario  # with this member's seed and load scale
    load_scale: tuple[float, ...]  # per load of the base scenario (the truth's factors)
    group: int  # the [[meters]] table it comes from (members of a group share a base)


@dataclass(frozen=True)
class TcpExposure:
    mode: str = "ports"  # ports: one port per meter; gateway: 247 unit ids per port; off
    host: str = "127.0.0.1"
    port: int = 5100  # the first port


@dataclass(frozen=True)
class RtuExposure:
    device: str = ""  # "" = off; one line, the first 247 meters at unit ids 1..247
    baud: int = 19200
    data_format: str = "N81"


@dataclass(frozen=True)
class CanopenExposure:
    interface: str = ""  # python-can interface; "" = off
    channel: str = ""
    bitrate: int = 125_000  # node ids 1..127: the first 127 meters


@dataclass(frozen=True)
class FleetConfig:
    members: tuple[MemberConfig, ...]
    fidelity: str = "truth"
    sample_rate_hz: float = 3200.0  # physics level only
    workers: int = 2  # physics level: worker processes
    store: str = "var/fleet"  # state files: <store>.ring and beside it the identity
    fault_log: str = ""  # JSON lines of every fault's start and end; "" = none
    # scheduled protocol faults: (member keys, kind, parameters, start_s, end_s)
    protocol_faults: tuple[tuple[tuple[str, ...], str, dict, float, float], ...] = ()
    tcp: TcpExposure = TcpExposure()
    rtu: RtuExposure = RtuExposure()
    canopen: CanopenExposure = CanopenExposure()
    http: str = ""  # HOST:PORT of the dashboard/API showing every member; "" = off
    mqtt: MqttSettings = MqttSettings()
    source: str = "<fleet>"
    base: str = "."  # the directory of FLEET.toml
    groups: tuple[tuple[Settings, Scenario], ...] = field(default=(), repr=False)

    def tcp_place(self, index: int) -> tuple[int, int]:
        """(port, unit id) of member ``index`` on the Modbus TCP exposure."""
        if self.tcp.mode == "gateway":
            return self.tcp.port + index // GATEWAY_UNITS, index % GATEWAY_UNITS + 1
        return self.tcp.port + index, 1


def _err(src: str, key: str, value: Any, allowed: str) -> SettingsError:
    return SettingsError(src, key, value, allowed)


def _file(src: str, base: Path, t: dict, key: str, prefix: str) -> Path | None:
    v = t.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not v:
        raise _err(src, prefix + key, v, "must be a file name (relative to the fleet file)")
    p = Path(v).expanduser()
    return p if p.is_absolute() else base / p


def _seeds(src: str, t: dict, count: int, prefix: str) -> list[int]:
    v = t.get("seeds")
    if v is None:
        return list(range(1, count + 1))
    if not (isinstance(v, list) and len(v) == 2 and all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)
            and v[1] - v[0] + 1 == count):
        raise _err(src, prefix + "seeds", v, f"must be [first, last] with last - first + 1 = "
                   f"count ({count}), e.g. [1, {count}]")
    return list(range(v[0], v[1] + 1))


def _ct_ratios(src: str, t: dict, prefix: str) -> list[float]:
    v = t.get("ct_ratios", [])
    if not isinstance(v, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and 1 <= x <= 10000 for x in v):
        raise _err(src, prefix + "ct_ratios", v, "must be a list of CT ratios 1..10000, "
                   "taken in turn by the members (every Meter of a member gets its ratio)")
    return [float(x) for x in v]


def _load_scale(src: str, t: dict, prefix: str) -> tuple[float, float]:
    v = t.get("load_scale", [0.8, 1.2])
    if not (isinstance(v, list) and len(v) == 2 and all(
            isinstance(x, int | float) and not isinstance(x, bool) and 0 <= x <= 10 for x in v)
            and v[0] <= v[1]):
        raise _err(src, prefix + "load_scale", v, "must be [low, high], 0 <= low <= high <= 10")
    return float(v[0]), float(v[1])


def member_scale(seed: int, low: float, high: float, n_loads: int) -> tuple[float, ...]:
    """Each load's current factor for one member: uniform in [low, high], from its seed."""
    import numpy as np

    rng = np.random.default_rng([4324, seed])
    return tuple(float(x) for x in rng.uniform(low, high, n_loads))


def scaled_scenario(base: Scenario, seed: int, scale: tuple[float, ...]) -> Scenario:
    """The member's scenario: the base one with its seed and each load's current scaled."""
    loads = tuple(replace(ld, current_a=ld.current_a * k) for ld, k in zip(base.loads, scale))
    return replace(base, seed=seed, loads=loads)


def _group(src: str, base: Path, t: Any, g: int, start: int
           ) -> tuple[list[MemberConfig], Settings, Scenario]:
    p = f"meters.{g + 1}."
    check_keys(src, t, {"key", "count", "settings", "scenario", "seeds", "ct_ratios",
                      "load_scale"}, p)
    count = whole_number(src, t, "count", 1, 1, MAX_METERS, p)
    pattern = t.get("key", "meter-{n}" if count > 1 else "meter")
    if not isinstance(pattern, str):
        raise _err(src, p + "key", pattern, 'must be a key or a pattern like "bldg-{n:03}"')
    try:
        keys = [pattern.format(n=n) for n in range(1, count + 1)]
    except (KeyError, IndexError, ValueError):
        raise _err(src, p + "key", pattern, 'may use only {n} (1..count), e.g. "bldg-{n:03}"') \
            from None
    if count > 1 and len(set(keys)) < count:
        raise _err(src, p + "key", pattern, 'must contain {n} when count > 1, e.g. "bldg-{n:03}"')
    bad = next((k for k in keys if not KEY.fullmatch(k)), None)
    if bad is not None:
        raise _err(src, p + "key", bad, "keys are letters, digits, _ . - (1..64)")
    try:
        settings = load_settings(_file(src, base, t, "settings", p))
        scenario = load_scenario(_file(src, base, t, "scenario", p))
    except SourceError as exc:
        raise _err(src, p + "scenario", t.get("scenario"), str(exc)) from None
    seeds = _seeds(src, t, count, p)
    ratios = _ct_ratios(src, t, p)
    low, high = _load_scale(src, t, p)
    by_ratio: dict[float, Settings] = {}
    members = []
    for j, (key, seed) in enumerate(zip(keys, seeds)):
        s = settings
        if ratios:
            ratio = ratios[j % len(ratios)]
            if ratio not in by_ratio:
                try:
                    by_ratio[ratio] = replace(settings, meters=tuple(
                        replace(m, ct_ratio=ratio) for m in settings.meters))
                except SettingsError as exc:
                    raise _err(src, p + "ct_ratios", ratio, str(exc)) from None
            s = by_ratio[ratio]
        scale = member_scale(seed, low, high, len(scenario.loads))
        members.append(MemberConfig(start + j, key, s, scaled_scenario(scenario, seed, scale),
                                    scale, g))
    return members, settings, scenario


def _tcp(src: str, data: dict) -> TcpExposure:
    t = data.get("modbus", {})
    check_keys(src, t, {"mode", "host", "port"}, "modbus.")
    mode = t.get("mode", "ports")
    if mode not in TCP_MODES:
        raise _err(src, "modbus.mode", mode, "must be one of " + ", ".join(TCP_MODES))
    host = t.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise _err(src, "modbus.host", host, "must be an address, e.g. 127.0.0.1")
    return TcpExposure(mode, host, whole_number(src, t, "port", 5100, 0, 65535, "modbus."))


def _rtu(src: str, data: dict) -> RtuExposure:
    t = data.get("rtu", {})
    check_keys(src, t, {"device", "baud", "format"}, "rtu.")
    device = t.get("device", "")
    if not isinstance(device, str):
        raise _err(src, "rtu.device", device, "must be a serial device, e.g. /dev/ttyUSB0")
    baud, fmt = t.get("baud", 19200), t.get("format", "N81")
    if baud not in BAUD_RATES:
        raise _err(src, "rtu.baud", baud, "must be one of " + ", ".join(map(str, BAUD_RATES)))
    if fmt not in DATA_FORMATS:
        raise _err(src, "rtu.format", fmt, "must be one of " + ", ".join(DATA_FORMATS))
    return RtuExposure(device, baud, fmt)


def _canopen(src: str, data: dict) -> CanopenExposure:
    t = data.get("canopen", {})
    check_keys(src, t, {"interface", "channel", "bitrate"}, "canopen.")
    s = parse_settings({"canopen": t}, src).canopen  # the meter's own checks and wording
    return CanopenExposure(s.interface, s.channel, s.bitrate)


def parse_fleet(data: dict, source: str = "<fleet>", base: Path | None = None) -> FleetConfig:
    base = base or Path.cwd()
    check_keys(source, data, {"fleet", "meters", "modbus", "rtu", "canopen", "http", "mqtt",
                            "faults"}, "")
    f = data.get("fleet", {})
    check_keys(source, f, {"fidelity", "sample_rate_hz", "workers", "store", "fault_log"},
             "fleet.")
    fidelity = f.get("fidelity", "truth")
    if fidelity not in FIDELITIES:
        raise _err(source, "fleet.fidelity", fidelity, "must be one of " + ", ".join(FIDELITIES))
    store = f.get("store", "var/fleet")
    if not isinstance(store, str) or not store:
        raise _err(source, "fleet.store", store, "must be a path (relative to the fleet file)")
    raw = data.get("meters", [])
    if not isinstance(raw, list) or not raw:
        raise _err(source, "meters", raw, "must list at least one [[meters]] table")
    members: list[MemberConfig] = []
    groups = []
    for g, t in enumerate(raw):
        more, settings, scenario = _group(source, base, t, g, len(members))
        members += more
        groups.append((settings, scenario))
        if len(members) > MAX_METERS:
            raise _err(source, f"meters.{g + 1}.count", t.get("count"),
                       f"the fleet may have at most {MAX_METERS} meters")
    seen: set[str] = set()
    for m in members:
        if m.key in seen:
            raise _err(source, f"meters.{m.group + 1}.key", m.key, "must be unique in the fleet")
        seen.add(m.key)
    tcp = _tcp(source, data)
    if tcp.mode != "off" and tcp.port:
        last = tcp.port + (len(members) - 1 if tcp.mode == "ports"
                           else (len(members) - 1) // GATEWAY_UNITS)
        if last > 65535:
            raise _err(source, "modbus.port", tcp.port, f"the last meter would need port {last}: "
                       "give a lower first port, or mode = \"gateway\"")
    http = data.get("http", {})
    check_keys(source, http, {"listen"}, "http.")
    listen = http.get("listen", "")
    if not isinstance(listen, str):
        raise _err(source, "http.listen", listen, "must be HOST:PORT, e.g. 127.0.0.1:8090")
    mqtt = parse_settings({"mqtt": data["mqtt"]}, source).mqtt if "mqtt" in data \
        else MqttSettings()
    rate = number(source, f, "sample_rate_hz", 3200.0, 1000.0, 12800.0, "fleet.")
    store_path = Path(store).expanduser()
    store_path = store_path if store_path.is_absolute() else base / store_path
    members, protocol_faults = _with_faults(source, data.get("faults", []), members)
    log = f.get("fault_log", str(store_path) + ".faults.jsonl")
    if not isinstance(log, str):
        raise _err(source, "fleet.fault_log", log, 'must be a file name, or "" for none')
    log_path = Path(log).expanduser() if log else None
    if fidelity == "physics":  # the members measure (and say they measure) at the fleet's rate
        members = [replace(m, settings=replace(m.settings, sample_rate_hz=rate)) for m in members]
    return FleetConfig(
        members=tuple(members), fidelity=fidelity, sample_rate_hz=rate,
        workers=whole_number(source, f, "workers", 2, 1, 64, "fleet."),
        store=str(store_path),
        fault_log=str(log_path if log_path is None or log_path.is_absolute()
                      else base / log_path) if log_path else "",
        tcp=tcp, rtu=_rtu(source, data), canopen=_canopen(source, data), http=listen,
        mqtt=mqtt, source=source, base=str(base), groups=tuple(groups),
        protocol_faults=tuple(protocol_faults))


def _with_faults(src: str, raw: Any, members: list[MemberConfig]
                 ) -> tuple[list[MemberConfig], list]:
    """``[[faults]]``: each for the members it names (``meter`` or ``meters``). A measurement
    or device fault is added to their scenario's scheduled faults (kind, target, start_s,
    end_s and the parameters); a protocol fault (protocols/faults.py: latency, no_answer,
    exception, ...) is returned as (keys, kind, parameters, start_s, end_s)."""
    from pm4324.protocols.faults import KINDS as WIRE
    from pm4324.protocols.faults import parse_params
    from pm4324.sources.faults import INF, FaultError, make_fault

    if not isinstance(raw, list):
        raise _err(src, "faults", raw, "must be [[faults]] tables")
    extra: dict[str, list] = {}
    wire: list = []
    keys = {m.key for m in members}
    for j, t in enumerate(raw):
        p = f"faults.{j + 1}."
        if not isinstance(t, dict):
            raise _err(src, f"faults.{j + 1}", t, "must be a table")
        names = t.get("meters", [t["meter"]] if "meter" in t else None)
        if not (isinstance(names, list) and names and all(n in keys for n in names)):
            raise _err(src, p + "meters", names, "must name meters of the fleet by key: "
                       'meter = "KEY" or meters = ["KEY", ...]')
        params = {k: v for k, v in t.items()
                  if k not in ("meter", "meters", "kind", "target", "start_s", "end_s")}
        if t.get("kind") in WIRE:
            start, end = t.get("start_s", 0.0), t.get("end_s", INF)
            try:
                values = parse_params(t["kind"], [f"{k}={v}" for k, v in params.items()])
            except ValueError as exc:
                raise _err(src, f"faults.{j + 1}", t["kind"], str(exc)) from None
            if not (isinstance(start, int | float) and isinstance(end, int | float)
                    and 0 <= start < end):
                raise _err(src, p + "start_s", start, "need 0 <= start_s < end_s")
            wire.append((tuple(names), t["kind"], values, float(start), float(end)))
            continue
        try:
            fault = make_fault(t.get("kind"), t.get("target"), params, t.get("start_s", 0.0),
                               t.get("end_s", INF))
        except FaultError as exc:
            raise _err(src, f"faults.{j + 1}", t.get("kind"), str(exc)) from None
        for n in names:
            extra.setdefault(n, []).append(fault)
    if not extra:
        return members, wire
    out = []
    for m in members:
        more = extra.get(m.key)
        if more:
            first = max((f.id for f in m.scenario.faults), default=0) + 1
            faults = m.scenario.faults + tuple(replace(f, id=first + k) for k, f in enumerate(more))
            m = replace(m, scenario=replace(m.scenario, faults=faults))
        out.append(m)
    return out, wire


def load_fleet(path: str | Path) -> FleetConfig:
    p = Path(path)
    return parse_fleet(read_toml(p), str(p), p.resolve().parent)
