"""Relay and alarm-rule settings as register numbers, and back.

Text settings travel as codes (the index in the vocabulary tuples of
``config.alarm_settings``, listed in docs/registers.md). A write to several fields of one
rule or relay is applied as one change and validated once, so a whole slot written with one
FC 16 request may go from "free" to "outside 207..253 V" even though no single field change
on its own would be a valid rule.
"""

from __future__ import annotations

from typing import Any

from pm4324.config.alarm_settings import (
    COMBINE,
    COMPARISONS,
    FREE_SLOT,
    POWER_UP,
    QUANTITIES,
    RELAY_MODES,
    TARGET_KINDS,
    AlarmRule,
)
from pm4324.config.settings import Settings
from pm4324.registers.table import Source

#: coded fields: field -> vocabulary (the code is the index)
RELAY_CODES = {"mode": RELAY_MODES, "power_up": POWER_UP, "combine": COMBINE}
ALARM_CODES = {"quantity": QUANTITIES, "target_kind": TARGET_KINDS, "comparison": COMPARISONS}
ACK_ALL = 3  # alarm_ack value that acknowledges both relays (1 and 2 = that relay)


def setting_value(src: Source, s: Settings) -> float:
    """The native number a relay or alarm setting reads as."""
    if src.group == "relays":
        value = getattr(s.relays.relays[src.index - 1], src.field)
        return float(RELAY_CODES[src.field].index(value))
    rule = s.alarms[src.index - 1] if src.index <= len(s.alarms) else FREE_SLOT
    if src.field in ALARM_CODES:
        return float(ALARM_CODES[src.field].index(getattr(rule, src.field)))
    if src.field in ("band_low", "band_high"):
        return rule.band[src.field == "band_high"]
    return float(getattr(rule, src.field))


def _rule_changes(rule: AlarmRule, fields: dict[str, float]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    band = list(rule.band)
    for name, value in fields.items():
        if name in ALARM_CODES:
            changes[name] = ALARM_CODES[name][int(value)]
        elif name in ("band_low", "band_high"):
            band[name == "band_high"] = _float32(value)
            changes["band"] = tuple(band)
        elif name in ("threshold", "hysteresis"):
            changes[name] = _float32(value)
        elif name == "latch":
            changes[name] = bool(value)
        else:  # relay, target_index, on_delay_s, off_delay_s
            changes[name] = int(value)
    return changes


def _float32(value: float) -> float:
    """A float32 register holds ~7 digits: 0.1 is saved as 0.1, not 0.10000000149."""
    return float(f"{value:.7g}")


def with_changes(s: Settings, group: str, index: int, fields: dict[str, float]) -> Settings:
    """``s`` with fields of relay or alarm slot ``index`` changed (raises SettingsError)."""
    if group == "relays":  # codes are in range: the map's min..max says so
        return s.with_relay(index, **{n: RELAY_CODES[n][int(v)] for n, v in fields.items()})
    rule = s.alarms[index - 1] if index <= len(s.alarms) else FREE_SLOT
    return s.with_alarm(index, **_rule_changes(rule, fields))


def alarm_mode(s: Settings, relay: int) -> bool:
    """True when relay ``relay`` (1-based) follows its rules (coil writes refused)."""
    return s.relays.relays[relay - 1].mode == "alarm"
