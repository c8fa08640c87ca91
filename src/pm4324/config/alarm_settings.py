"""Settings of the relays, the alarm rules and the state store (``[relays]``, ``[[alarms]]``,
``[store]`` in the settings file).

Kept apart from settings.py so that file stays about the measuring side. The readers here get
settings_parse.py's table reader, so every error names file, key, value and what is allowed, the
same way as every other setting. Runtime changes (Modbus writes) are checked again by
``alarm_problem``, called from ``settings.validate``.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import astuple, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # settings_parse.py imports this module; the reader is only a parameter here
    from pm4324.config.settings_parse import _Reader

N_RELAYS = 2
MAX_ALARMS = 16  # one bit each in the uint16 alarm status registers
MAX_DELAY_S = 3600
RELAY_MODES = ("manual", "alarm")
POWER_UP = ("open", "closed", "last")
COMBINE = ("any", "all")
DRIVERS = ("record", "command", "gpio")
QUANTITIES = ("v", "i", "kw", "kvar", "kva", "pf", "hz", "thd_v", "thd_i")
TARGET_KINDS = ("ct", "meter", "main")
COMPARISONS = ("above", "below", "outside")
#: quantities each kind of target has (a Meter has no THD, a main no current or power)
TARGET_QUANTITIES = {
    "ct": QUANTITIES,
    "meter": ("v", "i", "kw", "kvar", "kva", "pf", "hz"),
    "main": ("v", "hz", "thd_v"),
}
TARGET_COUNTS = {"ct": 24, "meter": 8, "main": 2}


@dataclass(frozen=True)
class RelaySettings:
    """One relay: driven by Modbus/CANopen writes (manual) or by its alarm rules."""

    mode: str = "manual"
    power_up: str = "open"  # manual mode at power-up: open, closed, or the last saved state
    combine: str = "any"  # alarm mode: closed when any / all of its enabled rules are raised


@dataclass(frozen=True)
class DriverSettings:
    """What switches the physical contacts (see device/relays.py)."""

    kind: str = "record"
    command: tuple[str, ...] = ()  # argv; "{relay}" -> 1/2 and "{state}" -> 0/1
    gpio_lines: tuple[int, ...] = ()  # sysfs GPIO numbers of relay 1 and relay 2
    gpio_active_low: bool = False
    gpio_root: str = "/sys/class/gpio"


@dataclass(frozen=True)
class AlarmRule:
    """One rule (slot). relay 0 = a free slot: kept, shown over Modbus, never evaluated."""

    relay: int = 0
    quantity: str = "i"
    target_kind: str = "ct"
    target_index: int = 1
    comparison: str = "above"
    threshold: float = 0.0  # above / below, in the quantity's unit (V, A, kW, kvar, kVA, PF, Hz, %)
    band: tuple[float, float] = (0.0, 0.0)  # outside: (low, high)
    hysteresis: float = 0.0
    on_delay_s: int = 0
    off_delay_s: int = 0
    latch: bool = False
    name: str = ""

    @property
    def target(self) -> str:
        return f"{self.target_kind}:{self.target_index}"

    @property
    def enabled(self) -> bool:
        return self.relay != 0

    def fingerprint(self) -> int:
        """CRC of the definition: a saved latch applies only to an unchanged rule."""
        return zlib.crc32(repr(astuple(self)).encode())

    def describe(self) -> str:
        """Short human text, e.g. "I ct:10 above 25" (names win when given)."""
        if self.name:
            return self.name
        limit = (f"outside {self.band[0]:g}..{self.band[1]:g}" if self.comparison == "outside"
                 else f"{self.comparison} {self.threshold:g}")
        return f"{self.quantity} {self.target} {limit}"


@dataclass(frozen=True)
class StoreSettings:
    """Where energy, relay and alarm state persist ("" = the default place, see store.py)."""

    path: str = ""
    commit_interval_s: int = 1  # seconds between two commits: the most a crash can lose


FREE_SLOT = AlarmRule()


@dataclass(frozen=True)
class RelayConfig:
    relays: tuple[RelaySettings, ...] = field(
        default_factory=lambda: (RelaySettings(), RelaySettings()))
    driver: DriverSettings = DriverSettings()


def read_relays(r: _Reader) -> RelayConfig:
    relays = []
    for k in range(1, N_RELAYS + 1):
        if str(k) not in r.table:
            relays.append(RelaySettings())
            continue
        sub = r.sub(str(k))
        relays.append(RelaySettings(
            mode=sub.choice("mode", "manual", RELAY_MODES),
            power_up=sub.choice("power_up", "open", POWER_UP),
            combine=sub.choice("combine", "any", COMBINE),
        ))
        sub.finish()
    kind = r.choice("driver", "record", DRIVERS)
    command = r.get("command", [])
    if not isinstance(command, list) or not all(isinstance(a, str) and a for a in command):
        raise r.error("command", command, "must be a list of strings (program and arguments)")
    if kind == "command" and not command:
        raise r.error("command", command, 'driver "command" needs the program to run')
    lines = r.get("gpio_lines", [])
    if not isinstance(lines, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 4095 for n in lines
    ) or (lines and len(lines) != N_RELAYS):
        raise r.error("gpio_lines", lines, "must be two GPIO numbers 0..4095, relay 1 then 2")
    if kind == "gpio" and not lines:
        raise r.error("gpio_lines", lines, 'driver "gpio" needs the two GPIO numbers')
    driver = DriverSettings(kind=kind, command=tuple(command), gpio_lines=tuple(lines),
                            gpio_active_low=r.flag("gpio_active_low", False),
                            gpio_root=r.text("gpio_root", "/sys/class/gpio"))
    r.finish()
    return RelayConfig(tuple(relays), driver)


def read_alarms(r: _Reader, n_mains: int) -> tuple[AlarmRule, ...]:
    """The ``[[alarms]]`` array; errors name the rule as alarms.N (1-based, the slot number)."""
    items = r.get("alarms", [])
    if not isinstance(items, list) or len(items) > MAX_ALARMS:
        raise r.error("alarms", items, f"must be an array of at most {MAX_ALARMS} [[alarms]] tables")
    rules = []
    for n, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise r.error(f"alarms.{n}", item, "must be a table")
        rules.append(_read_rule(type(r)(r.source, item, f"alarms.{n}."), n_mains))
    return tuple(rules)


def _read_rule(r: _Reader, n_mains: int) -> AlarmRule:
    target = r.text("target", "ct:1")
    kind, _, index = target.partition(":")
    if kind not in TARGET_KINDS or not index.isdigit():
        raise r.error("target", target, 'must be "ct:K", "meter:M" or "main:N"')
    comparison = r.choice("comparison", "above", COMPARISONS)
    band = r.get("band", [0.0, 0.0])
    if comparison == "outside":
        if "threshold" in r.table:
            raise r.error("threshold", r.table["threshold"], 'comparison "outside" uses band')
        if not (isinstance(band, list) and len(band) == 2 and all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in band)):
            raise r.error("band", band, "must be [low, high]")
    elif "band" in r.table:
        raise r.error("band", band, 'applies only to comparison "outside"')
    rule = AlarmRule(
        relay=r.integer("relay", 1, 0, N_RELAYS),
        quantity=r.choice("quantity", "i", QUANTITIES),
        target_kind=kind,
        target_index=int(index),
        comparison=comparison,
        threshold=r.number("threshold", 0.0, -1e12, 1e12),
        band=(float(band[0]), float(band[1])),
        hysteresis=r.number("hysteresis", 0.0, 0.0, 1e12),
        on_delay_s=r.integer("on_delay_s", 0, 0, MAX_DELAY_S),
        off_delay_s=r.integer("off_delay_s", 0, 0, MAX_DELAY_S),
        latch=r.flag("latch", False),
        name=r.text("name", ""),
    )
    r.finish()
    problem = rule_problem(rule, n_mains)
    if problem:
        key, value, allowed = problem
        raise r.error(key, value, allowed)
    return rule


def read_store(r: _Reader) -> StoreSettings:
    store = StoreSettings(path=r.text("path", ""),
                          commit_interval_s=r.integer("commit_interval_s", 1, 1, 3600))
    r.finish()
    return store


def rule_problem(rule: AlarmRule, n_mains: int) -> tuple[str, Any, str] | None:
    """(key, value, allowed) of the first thing wrong with one rule, or None."""
    if rule.target_kind not in TARGET_KINDS:
        return "target", rule.target, 'must be "ct:K", "meter:M" or "main:N"'
    count = n_mains if rule.target_kind == "main" else TARGET_COUNTS[rule.target_kind]
    if not 1 <= rule.target_index <= count:
        return "target", rule.target, f"{rule.target_kind} is numbered 1 to {count}"
    allowed = TARGET_QUANTITIES[rule.target_kind]
    if rule.quantity not in allowed:
        return "quantity", rule.quantity, f"a {rule.target_kind} has " + ", ".join(allowed)
    numbers = (rule.threshold, *rule.band, rule.hysteresis)
    if not all(math.isfinite(x) for x in numbers):
        return "threshold", numbers, "must be finite numbers"
    if rule.hysteresis < 0:
        return "hysteresis", rule.hysteresis, "must be 0 or more"
    if not (0 <= rule.on_delay_s <= MAX_DELAY_S and 0 <= rule.off_delay_s <= MAX_DELAY_S):
        return "on_delay_s", (rule.on_delay_s, rule.off_delay_s), f"must be 0 to {MAX_DELAY_S} s"
    if rule.comparison == "outside":
        low, high = rule.band
        if not low < high:
            return "band", list(rule.band), "must be [low, high] with low < high"
        if 2 * rule.hysteresis >= high - low:
            return ("hysteresis", rule.hysteresis,
                    f"must be less than half the band ({(high - low) / 2:g}), or it never clears")
    if rule.comparison not in COMPARISONS:
        return "comparison", rule.comparison, "must be one of " + ", ".join(COMPARISONS)
    return None


def alarm_problem(relays: RelayConfig, alarms: tuple[AlarmRule, ...], n_mains: int
                  ) -> tuple[str, Any, str] | None:
    """Whole-settings check of relays and rules (also after every Modbus write)."""
    if len(alarms) > MAX_ALARMS:
        return "alarms", len(alarms), f"at most {MAX_ALARMS} rules"
    for k, relay in enumerate(relays.relays, start=1):
        for key, value, values in (("mode", relay.mode, RELAY_MODES),
                                   ("power_up", relay.power_up, POWER_UP),
                                   ("combine", relay.combine, COMBINE)):
            if value not in values:
                return f"relays.{k}.{key}", value, "must be one of " + ", ".join(values)
    for n, rule in enumerate(alarms, start=1):
        problem = rule_problem(rule, n_mains)
        if problem:
            return f"alarms.{n}.{problem[0]}", problem[1], problem[2]
    return None
