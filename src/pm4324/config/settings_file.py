"""Settings as TOML data: the canonical table of a ``Settings``, a new file, atomic writes.

``settings_table`` is the one description of which keys a ``Settings`` is made of; a new file
(``settings_to_toml``) and the write-back into an operator's existing file
(``config.settings_writeback``) both come from it, so they cannot disagree. A crash in the
middle of saving must never leave a half-written file: write a temporary file with the
old file's mode and owner, fsync it, rename it over the old one, fsync the directory.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import tomlkit

from pm4324.config.alarm_settings import AlarmRule, DriverSettings, RelaySettings
from pm4324.config.ct_settings import cts_table
from pm4324.config.history_settings import HistorySettings
from pm4324.config.mqtt_settings import MqttSettings
from pm4324.config.security_settings import security_table
from pm4324.config.settings import N_CTS, Calibration, Settings

Path_ = tuple[str, ...]  # a key path, e.g. ("meters", "3", "ct_ratio") or ("alarms", "0", "relay")


def _plain(v: Any) -> Any:
    """Whole floats as TOML integers (``ct_ratio = 250``), tuples as arrays, within tables too."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def settings_table(s: Settings) -> dict[str, Any]:
    """The TOML table of ``s``: every key of the main sections, and the optional ones
    (calibration, relays, alarms, store, replay) only where they differ from the defaults."""
    t: dict[str, Any] = {"model": s.model, "sample_rate_hz": _plain(s.sample_rate_hz)}
    if s.ct_input != Settings().ct_input:
        t["ct_input"] = s.ct_input  # the PM-4324P variant (docs/settings.md)
    t["mains"] = {str(m): {"pt_ratio": _plain(x.pt_ratio),
                           "nominal_voltage_v": _plain(x.nominal_voltage_v),
                           "nominal_frequency_hz": _plain(x.nominal_frequency_hz)}
                  for m, x in enumerate(s.mains, 1)}
    t["meters"] = {}
    for m, meter in enumerate(s.meters, 1):
        row = {"wiring": meter.wiring.value, "ct_ratio": _plain(meter.ct_ratio)}
        if meter.wiring.value == "1P2W-1CT" or tuple(meter.circuit_phases) != ("a", "b", "c"):
            row["circuit_phases"] = list(meter.circuit_phases)
        if meter.name:
            row["name"] = meter.name
        if any(meter.ct_names):
            row["ct_names"] = list(meter.ct_names)
        t["meters"][str(m)] = row
    if cts := cts_table(s.cts, s.meters):
        t["cts"] = cts
    cal: dict[str, Any] = {}
    for kind, cals, count in (("voltage", s.calibration_v, 3 * s.n_mains),
                              ("current", s.calibration_i, N_CTS)):
        rows = {str(k): {"gain": _plain(c.gain), "offset": _plain(c.offset),
                         "phase_deg": _plain(c.phase_deg)}
                for k, c in enumerate(cals[:count], 1) if c != Calibration()}
        if rows:
            cal[kind] = rows
    if cal:
        t["calibration"] = cal
    mb, co = s.modbus, s.canopen
    t["modbus"] = {"address": mb.address, "baud": mb.baud, "data_format": mb.data_format,
                   "word_order": mb.word_order, "tcp_listen": mb.tcp_listen,
                   "tcp_enabled": mb.tcp_enabled, "serial_port": mb.serial_port,
                   "tcp_listen_other_order": mb.tcp_listen_other_order,
                   "other_word_order": mb.other_word_order}
    t["canopen"] = {"node_id": co.node_id, "bitrate": co.bitrate, "interface": co.interface,
                    "channel": co.channel}
    relays = _relays_table(s)
    if relays:
        t["relays"] = relays
    if s.alarms:
        t["alarms"] = [_alarm_table(rule) for rule in s.alarms]
    store = {"path": s.store.path} if s.store.path else {}
    if s.store.commit_interval_s != 1:
        store["commit_interval_s"] = s.store.commit_interval_s
    if store:
        t["store"] = store
    security = security_table(s.security)
    if security:
        t["security"] = _plain(security)
    if s.history != HistorySettings():
        t["history"] = {f.name: _plain(getattr(s.history, f.name)) if isinstance(
            getattr(s.history, f.name), float) else getattr(s.history, f.name)
            for f in fields(HistorySettings)}
    if s.mqtt != MqttSettings():
        t["mqtt"] = {f.name: getattr(s.mqtt, f.name) for f in fields(MqttSettings)
                     if getattr(s.mqtt, f.name) != getattr(MqttSettings(), f.name)}
    if s.replay.inputs:
        t["replay"] = {"primary": s.replay.primary,
                       "inputs": {name: {"channel": ch.channel, "scale": _plain(ch.scale)}
                                  for name, ch in s.replay.inputs.items()}}
    return t


def _relays_table(s: Settings) -> dict[str, Any]:
    t: dict[str, Any] = {}
    d = s.relays.driver
    if d != DriverSettings():
        t["driver"] = d.kind
        if d.command:
            t["command"] = list(d.command)
        if d.gpio_lines:
            t.update(gpio_lines=list(d.gpio_lines), gpio_active_low=d.gpio_active_low,
                     gpio_root=d.gpio_root)
    for k, relay in enumerate(s.relays.relays, 1):
        if relay != RelaySettings():
            t[str(k)] = {"mode": relay.mode, "power_up": relay.power_up,
                         "combine": relay.combine}
    return t


def _alarm_table(rule: AlarmRule) -> dict[str, Any]:
    t: dict[str, Any] = {"relay": rule.relay, "quantity": rule.quantity, "target": rule.target,
                         "comparison": rule.comparison}
    if rule.comparison == "outside":
        t["band"] = _plain(rule.band)
    else:
        t["threshold"] = _plain(rule.threshold)
    t.update(hysteresis=_plain(rule.hysteresis), on_delay_s=rule.on_delay_s,
             off_delay_s=rule.off_delay_s, latch=rule.latch)
    if rule.name != AlarmRule().name:
        t["name"] = rule.name
    return t


def flatten(table: dict[str, Any], prefix: Path_ = ()) -> dict[Path_, Any]:
    """Leaf values by key path; a list of tables ([[alarms]]) is indexed "0", "1", ...;
    a replay input is one leaf (an inline table)."""
    out: dict[Path_, Any] = {}
    for key, value in table.items():
        path = (*prefix, key)
        if isinstance(value, dict) and prefix != ("replay", "inputs"):
            out.update(flatten(value, path))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for i, row in enumerate(value):
                out.update(flatten(row, (*path, str(i))))
        else:
            out[path] = value
    return out


def settings_to_toml(s: Settings) -> str:
    """A new settings file for ``s`` (an existing file is edited in place instead)."""
    doc = tomlkit.document()
    doc.add(tomlkit.comment("pm4324 settings (written by the meter; see "
                            "src/pm4324/data/building-settings.toml for every key)"))
    for key, value in settings_table(s).items():
        doc[key] = _toml_value(key, value)
    return tomlkit.dumps(doc)


def _toml_value(key: str, value: Any) -> Any:
    """Numbered tables ([meters.3]) without an empty [meters] header; replay inputs inline."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        aot = tomlkit.aot()
        for row in value:
            aot.append(tomlkit.item(row))
        return aot
    if not isinstance(value, dict):
        return value
    numbered = bool(value) and all(k.isdigit() for k in value)
    table = tomlkit.table(is_super_table=numbered or None)
    for k, v in value.items():
        if key == "inputs" and isinstance(v, dict):
            inline = tomlkit.inline_table()
            inline.update(v)
            table[k] = inline
        else:
            table[k] = _toml_value(k, v)
    return table


def save_settings(s: Settings, path: Path) -> None:
    """Write a new settings file for ``s``."""
    write_atomic(path, settings_to_toml(s))


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old or the new file, whole;
    the new file keeps the old one's mode and owner (a new file gets 0644 less the umask)."""
    target = path.resolve()
    directory = target.parent
    try:
        old = target.stat()
    except FileNotFoundError:
        old = None
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=directory)
    try:
        if old is not None:
            os.fchmod(fd, old.st_mode & 0o7777)
            if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fd, old.st_uid, old.st_gid)
                except PermissionError:  # not root: the file becomes ours, mode kept
                    pass
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o644 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX: the directory entry is data too)."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
