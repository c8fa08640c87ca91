"""Reading a scenario file (TOML, see docs/scenarios.md) into a ``Scenario``.

Every key is checked: an unknown key, a value out of range or of the wrong type is a
``ScenarioError`` naming the file, the key, the value and what is allowed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pm4324.config.settings import N_CTS, PHASES, file_problem
from pm4324.config.toml_file import check_keys, number
from pm4324.sources.base import SourceError
from pm4324.sources.faults import FaultError, parse_faults
from pm4324.sources.scenario import (
    AdcSpec,
    CtError,
    LoadSpec,
    MainSpec,
    Sag,
    Scenario,
    ScenarioError,
)


def _harmonics(src: str, key: str, raw: Any) -> dict[int, tuple[float, float]]:
    if not isinstance(raw, dict):
        raise ScenarioError(src, key, raw, 'must be a table like { 5 = 0.03 } or { 5 = [0.03, 180] }')
    out = {}
    for h, v in raw.items():
        if not str(h).isdigit() or not 2 <= int(h) <= 50:
            raise ScenarioError(src, f"{key}.{h}", v, "harmonic orders are 2 to 50")
        frac, deg = (v, 0.0) if isinstance(v, int | float) else (tuple(v) + (0.0,))[:2]
        if not isinstance(frac, int | float) or not 0 <= frac <= 2:
            raise ScenarioError(src, f"{key}.{h}", v, "fraction of the fundamental, 0 to 2")
        out[int(h)] = (float(frac), float(deg))
    return out


def _num(src: str, table: dict, key: str, default: float, lo: float, hi: float,
         prefix: str) -> float:
    return number(src, table, key, default, lo, hi, prefix, ScenarioError)


def _check_keys(src: str, table: Any, allowed: set[str], prefix: str) -> None:
    check_keys(src, table, allowed, prefix, ScenarioError, "scenario key")


def parse_scenario(data: dict[str, Any], src: str = "<scenario>") -> Scenario:
    _check_keys(src, data, {"name", "seed", "mains", "loads", "adc", "ct_errors", "start",
                            "time_zone", "faults"}, "")
    mains = []
    raw_mains = data.get("mains", {})
    if not isinstance(raw_mains, dict):
        raise ScenarioError(src, "mains", raw_mains, "must be tables [mains.1] and [mains.2]")
    _check_keys(src, raw_mains, {"1", "2"}, "mains.")
    for name, value in (("loads", data.get("loads", [])), ("ct_errors", data.get("ct_errors", {}))):
        if not isinstance(value, list if name == "loads" else dict):
            raise ScenarioError(src, name, value, "must be [[loads]] tables" if name == "loads"
                                else "must be tables [ct_errors.N]")
    for m in (1, 2):
        t = raw_mains.get(str(m), {})
        p = f"mains.{m}."
        _check_keys(src, t, {"voltage_v", "frequency_hz", "drift_hz", "drift_period_s",
                             "phase_scale", "harmonics", "sags"}, p)
        sags = []
        for j, sg in enumerate(t.get("sags", [])):
            q = f"{p}sags.{j}."
            _check_keys(src, sg, {"start_s", "duration_s", "retained", "phases"}, q)
            phases = sg.get("phases", "abc")
            if not (isinstance(phases, str) and phases and set(phases) <= set(PHASES)):
                raise ScenarioError(src, q + "phases", phases, 'must be phases like "a" or "abc"')
            sags.append(Sag(_num(src, sg, "start_s", 0, 0, 1e9, q),
                            _num(src, sg, "duration_s", 0.1, 0, 1e9, q),
                            _num(src, sg, "retained", 0.5, 0, 2, q), phases))
        scale = t.get("phase_scale", [1.0, 1.0, 1.0])
        if not (isinstance(scale, list) and len(scale) == 3
                and all(isinstance(x, int | float) and 0 <= x <= 2 for x in scale)):
            raise ScenarioError(src, p + "phase_scale", scale, "must be three numbers 0..2")
        mains.append(MainSpec(
            voltage_v=_num(src, t, "voltage_v", 230, 0, 1e6, p),
            frequency_hz=_num(src, t, "frequency_hz", 50, 40, 70, p),
            drift_hz=_num(src, t, "drift_hz", 0, 0, 5, p),
            drift_period_s=_num(src, t, "drift_period_s", 600, 1, 1e9, p),
            phase_scale=tuple(float(x) for x in scale),
            harmonics=_harmonics(src, p + "harmonics", t.get("harmonics", {})),
            sags=tuple(sags),
        ))
    loads = []
    for j, ld in enumerate(data.get("loads", [])):
        p = f"loads.{j}."
        _check_keys(src, ld, {"name", "cts", "phases", "current_a", "pf", "export", "harmonics",
                              "on_s", "off_s", "daily_profile", "start_hour"}, p)
        cts = ld.get("cts")
        if not (isinstance(cts, list) and cts and all(isinstance(c, int) and 1 <= c <= N_CTS
                                                      for c in cts)):
            raise ScenarioError(src, p + "cts", cts, "must be a list of CT numbers 1..24")
        phases = ld.get("phases", [PHASES[(c - 1) % 3] for c in cts])
        if not (isinstance(phases, list) and len(phases) == len(cts)
                and all(ph in PHASES for ph in phases)):
            raise ScenarioError(src, p + "phases", phases, 'must list "a"/"b"/"c" per CT')
        pf = _num(src, ld, "pf", 1.0, -1.0, 1.0, p)
        if pf == 0:
            raise ScenarioError(src, p + "pf", pf, "must not be 0 (use 0.001 for a pure reactance)")
        profile = ld.get("daily_profile", [])
        if profile and not (isinstance(profile, list) and len(profile) == 24):
            raise ScenarioError(src, p + "daily_profile", profile, "must be 24 hourly numbers")
        loads.append(LoadSpec(
            name=str(ld.get("name", f"load {j + 1}")), cts=tuple(cts), phases=tuple(phases),
            current_a=_num(src, ld, "current_a", 0, 0, 1e5, p), pf=pf,
            export=bool(ld.get("export", False)),
            harmonics=_harmonics(src, p + "harmonics", ld.get("harmonics", {})),
            on_s=_num(src, ld, "on_s", 0, 0, 1e9, p), off_s=_num(src, ld, "off_s", 0, 0, 1e9, p),
            daily_profile=tuple(float(x) for x in profile),
            start_hour=_num(src, ld, "start_hour", 0, 0, 24, p),
        ))
    adc = None
    if "adc" in data:
        a = data["adc"]
        _check_keys(src, a, {"bits", "voltage_full_scale_v", "current_full_scale_a",
                             "noise_lsb"}, "adc.")
        adc = AdcSpec(bits=int(_num(src, a, "bits", 24, 8, 32, "adc.")),
                      voltage_full_scale_v=_num(src, a, "voltage_full_scale_v", 1000, 1, 1e4,
                                                "adc."),
                      current_full_scale_a=_num(src, a, "current_full_scale_a", 3, 0.01, 100,
                                                "adc."),
                      noise_lsb=_num(src, a, "noise_lsb", 1, 0, 1e6, "adc."))
    errors = {}
    for k, e in data.get("ct_errors", {}).items():
        if not str(k).isdigit() or not 1 <= int(k) <= N_CTS:
            raise ScenarioError(src, f"ct_errors.{k}", e, "keys are CT numbers 1..24")
        errors[int(k)] = CtError(_num(src, e, "ratio_pct", 0, -10, 10, f"ct_errors.{k}."),
                                 _num(src, e, "phase_deg", 0, -5, 5, f"ct_errors.{k}."))
    seed = data.get("seed", 0)
    if not isinstance(seed, int):
        raise ScenarioError(src, "seed", seed, "must be a whole number")
    try:
        faults = parse_faults(data.get("faults", []), src)
    except FaultError as exc:
        raise SourceError(str(exc)) from None
    return Scenario(str(data.get("name", "scenario")), seed, tuple(mains), tuple(loads), adc,
                    errors, src, *_start(src, data), faults=faults)


def _start(src: str, data: dict[str, Any]) -> tuple[str, str]:
    """``start`` (a TOML date or local date-time) and ``time_zone`` (IANA), both optional."""
    import datetime as dt
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    start, tz = data.get("start", ""), data.get("time_zone", "")
    if start != "" and not isinstance(start, dt.date):
        raise ScenarioError(src, "start", start, "must be a TOML date or local date-time, "
                            "e.g. 2026-03-01 or 2026-03-01T00:00:00")
    if isinstance(start, dt.datetime) and start.tzinfo is not None:
        raise ScenarioError(src, "start", start, "must be local (no offset): give time_zone")
    try:
        if tz:
            ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ScenarioError(src, "time_zone", tz, "must be an IANA zone, e.g. Europe/Berlin") from None
    return (start.isoformat() if start != "" else ""), tz


def load_scenario(path: str | Path | None) -> Scenario:
    """Load a scenario file; None gives the built-in small multi-tenant building."""
    p = Path(path) if path else Path(__file__).resolve().parent.parent / "data" / "building.toml"
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SourceError(file_problem("scenario file", p, exc, "--scenario")) from None
    return parse_scenario(data, str(p))
