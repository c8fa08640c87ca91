"""Writing settings back to their TOML file, atomically.

Configuration written over Modbus or CANopen must survive a restart, and a crash in the
middle of saving must never leave a half-written settings file: write a temporary file,
fsync it, rename it over the old one, fsync the directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pm4324.config.alarm_settings import AlarmRule, DriverSettings, RelaySettings
from pm4324.config.settings import N_CTS, Calibration, Settings


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(float(v)) if isinstance(v, float) and not float(v).is_integer() else (
            str(int(v)) if float(v).is_integer() else repr(v))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(type(v))


def settings_to_toml(s: Settings) -> str:
    lines = [
        "# pm4324 settings (written by the meter after a configuration change;",
        "# see src/pm4324/data/building-settings.toml for every key, with comments)",
        f"model = {_value(s.model)}",
        f"sample_rate_hz = {_value(s.sample_rate_hz)}",
        f"ct_input = {_value(s.ct_input)}",
    ]
    for m, main in enumerate(s.mains, 1):
        lines += ["", f"[mains.{m}]", f"pt_ratio = {_value(main.pt_ratio)}",
                  f"nominal_voltage_v = {_value(main.nominal_voltage_v)}",
                  f"nominal_frequency_hz = {_value(main.nominal_frequency_hz)}"]
    for m, meter in enumerate(s.meters, 1):
        lines += ["", f"[meters.{m}]", f"wiring = {_value(meter.wiring.value)}",
                  f"ct_ratio = {_value(meter.ct_ratio)}"]
        if meter.wiring.value == "1P2W-1CT":
            lines.append(f"circuit_phases = {_value(list(meter.circuit_phases))}")
    for kind, cals, count in (("voltage", s.calibration_v, 3 * s.n_mains),
                              ("current", s.calibration_i, N_CTS)):
        for k, cal in enumerate(cals[:count], 1):
            if cal != Calibration():
                lines += ["", f"[calibration.{kind}.{k}]", f"gain = {_value(cal.gain)}",
                          f"offset = {_value(cal.offset)}", f"phase_deg = {_value(cal.phase_deg)}"]
    mb, co = s.modbus, s.canopen
    lines += ["", "[modbus]", f"address = {mb.address}", f"baud = {mb.baud}",
              f"data_format = {_value(mb.data_format)}", f"word_order = {_value(mb.word_order)}",
              f"tcp_listen = {_value(mb.tcp_listen)}", f"tcp_enabled = {_value(mb.tcp_enabled)}",
              f"serial_port = {_value(mb.serial_port)}",
              "", "[canopen]", f"node_id = {co.node_id}", f"bitrate = {co.bitrate}",
              f"interface = {_value(co.interface)}", f"channel = {_value(co.channel)}"]
    lines += _relay_lines(s)
    if s.store.path:
        lines += ["", "[store]", f"path = {_value(s.store.path)}"]
    if s.replay.inputs:
        lines += ["", "[replay]", f"primary = {_value(s.replay.primary)}", "", "[replay.inputs]"]
        for name, ch in s.replay.inputs.items():
            lines.append(f"{name} = {{ channel = {_value(ch.channel)}, scale = {_value(ch.scale)} }}")
    return "\n".join(lines) + "\n"


def _relay_lines(s: Settings) -> list[str]:
    """[relays] and [[alarms]], only where they differ from the defaults (a short file)."""
    lines: list[str] = []
    d = s.relays.driver
    if d != DriverSettings():
        lines += ["", "[relays]", f"driver = {_value(d.kind)}"]
        if d.command:
            lines.append(f"command = {_value(list(d.command))}")
        if d.gpio_lines:
            lines += [f"gpio_lines = {_value(list(d.gpio_lines))}",
                      f"gpio_active_low = {_value(d.gpio_active_low)}",
                      f"gpio_root = {_value(d.gpio_root)}"]
    for k, relay in enumerate(s.relays.relays, 1):
        if relay != RelaySettings():
            lines += ["", f"[relays.{k}]", f"mode = {_value(relay.mode)}",
                      f"power_up = {_value(relay.power_up)}", f"combine = {_value(relay.combine)}"]
    for rule in s.alarms:
        lines += ["", "[[alarms]]", f"relay = {rule.relay}", f"quantity = {_value(rule.quantity)}",
                  f"target = {_value(rule.target)}", f"comparison = {_value(rule.comparison)}"]
        if rule.comparison == "outside":
            lines.append(f"band = {_value(list(rule.band))}")
        else:
            lines.append(f"threshold = {_value(rule.threshold)}")
        lines += [f"hysteresis = {_value(rule.hysteresis)}", f"on_delay_s = {rule.on_delay_s}",
                  f"off_delay_s = {rule.off_delay_s}", f"latch = {_value(rule.latch)}"]
        if rule.name != AlarmRule().name:
            lines.append(f"name = {_value(rule.name)}")
    return lines


def save_settings(s: Settings, path: Path) -> None:
    write_atomic(path, settings_to_toml(s))


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old or the new file, whole."""
    directory = path.resolve().parent
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
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
