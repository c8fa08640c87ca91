"""Alarm rules: one small state machine per rule, driven once per snapshot.

Pure and deterministic: time is counted in snapshots (seconds of measurement), never read
from a clock, so a replay or a test gives the same trips at the same seconds.

Per rule and second, the *margin* says how far the value is past its limit
(above: x - threshold; below: threshold - x; outside: max(low - x, x - high); for a main's
per-phase V or THD the worst phase). The rule is

* **raised** once ``margin > 0`` has held for ``on_delay_s + 1`` consecutive seconds (so with
  a delay of 0 it is raised in the first second the value is past the limit, with 3 three
  seconds later);
* **cleared** once ``margin <= -hysteresis`` has held for ``off_delay_s + 1`` consecutive
  seconds. Between the two it stays as it is (the hysteresis band).

A latching rule, once raised, keeps its output on until it is acknowledged *and* its
condition has cleared; acknowledging while the condition still holds only lets it clear by
itself later. A relay in alarm mode is closed when any (or all, per relay) of its enabled
rules' outputs are on; a relay without rules stays open.

**Invalid input holds the rule.** A second whose value is NaN, or whose quality flags make
that quantity meaningless, neither raises nor clears a rule and restarts a pending delay:
the output keeps its last state. The flags that count depend on the quantity: every
quantity is invalid with ``invalid_samples``, ``no_data`` or ``unused``; PF and voltage THD
also with ``voltage_absent``, frequency also with ``voltage_absent`` or ``unsynchronised``.
V, I and the powers stay valid when the voltage is absent (0 V *is* the measurement an
under-voltage rule is for), and with ``clipping`` (an over-range current is what an
over-current rule is for).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pm4324.config.alarm_settings import AlarmRule
from pm4324.snapshot import AlarmStatus, CtValues, Flag, MainValues, MeterValues

_ALWAYS = Flag.INVALID_SAMPLES | Flag.NO_DATA | Flag.UNUSED
INVALID_FLAGS = {
    "v": _ALWAYS, "i": _ALWAYS, "kw": _ALWAYS, "kvar": _ALWAYS, "kva": _ALWAYS,
    "thd_i": _ALWAYS,
    "pf": _ALWAYS | Flag.VOLTAGE_ABSENT,
    "thd_v": _ALWAYS | Flag.VOLTAGE_ABSENT,
    "hz": _ALWAYS | Flag.VOLTAGE_ABSENT | Flag.UNSYNCHRONISED,
}
#: quantity -> (snapshot field, factor from the snapshot's unit to the rule's unit)
FIELDS = {
    "v": ("v_rms", 1.0), "i": ("i_rms", 1.0), "kw": ("p_w", 1e-3), "kvar": ("q_var", 1e-3),
    "kva": ("s_va", 1e-3), "pf": ("pf", 1.0), "hz": ("frequency_hz", 1.0),
    "thd_v": ("thd_v_pct", 1.0), "thd_i": ("thd_i_pct", 1.0),
}
MAIN_FIELDS = {"v": "v_ln", "hz": "frequency_hz", "thd_v": "thd_v_pct"}


def rule_value(rule: AlarmRule, ct: CtValues, meter: MeterValues, main: MainValues
               ) -> tuple[np.ndarray, int]:
    """The rule's input (one value, or three phases of a main) and its quality flags."""
    i = rule.target_index - 1
    if rule.target_kind == "main":
        values = np.atleast_1d(getattr(main, MAIN_FIELDS[rule.quantity])[i])
        return values.astype(float), int(main.flags[i])
    group = ct if rule.target_kind == "ct" else meter
    name, factor = FIELDS[rule.quantity]
    return np.atleast_1d(float(getattr(group, name)[i]) * factor), int(group.flags[i])


def margins(rule: AlarmRule, values: np.ndarray) -> np.ndarray:
    """How far past the limit each value is (> 0 = past it)."""
    if rule.comparison == "above":
        return values - rule.threshold
    if rule.comparison == "below":
        return rule.threshold - values
    low, high = rule.band
    return np.maximum(low - values, values - high)


@dataclass
class _State:
    raised: bool = False
    pending: int = 0  # consecutive valid seconds the condition has pointed the other way
    unacked: bool = False  # latching rule raised since the last acknowledge
    value: float = math.nan  # last valid input (worst phase), for display

    def output(self) -> bool:
        return self.raised or self.unacked


@dataclass(frozen=True)
class Transition:
    """A change of one rule: "raised", "cleared", "held" (condition cleared, output latched)
    or "acknowledged"."""

    slot: int  # 1-based
    kind: str
    value: float


class AlarmEngine:
    """The rules of one meter and their states."""

    def __init__(self, rules: tuple[AlarmRule, ...], latched: dict[int, int] | None = None):
        """``latched``: slot -> rule fingerprint of outputs latched before a restart."""
        self.rules = rules
        self._states = [_State() for _ in rules]
        for slot, fingerprint in (latched or {}).items():
            if slot <= len(rules) and rules[slot - 1].latch and (
                    rules[slot - 1].fingerprint() == fingerprint):
                self._states[slot - 1].unacked = True

    def configure(self, rules: tuple[AlarmRule, ...]) -> list[Transition]:
        """New rules: a slot whose rule is unchanged keeps its state, others start clear."""
        def same(k: int) -> bool:
            return k < len(rules) and k < len(self.rules) and rules[k] == self.rules[k]

        changes = [Transition(k + 1, "cleared", s.value)
                   for k, s in enumerate(self._states) if s.output() and not same(k)]
        self._states = [self._states[k] if same(k) else _State() for k in range(len(rules))]
        self.rules = rules
        return changes

    def update(self, ct: CtValues, meter: MeterValues, main: MainValues) -> list[Transition]:
        """Advance every enabled rule by one second; the output changes it caused."""
        changes = []
        for k, (rule, state) in enumerate(zip(self.rules, self._states)):
            if not rule.enabled:
                continue
            values, flags = rule_value(rule, ct, meter, main)
            if flags & INVALID_FLAGS[rule.quantity] or not np.all(np.isfinite(values)):
                state.pending = 0  # hold: see the module docstring
                continue
            past = margins(rule, values)
            worst = int(np.argmax(past))
            state.value = float(values[worst])
            wants = bool(past[worst] > (-rule.hysteresis if state.raised else 0.0))
            if wants == state.raised:
                state.pending = 0
                continue
            state.pending += 1
            if state.pending <= (rule.off_delay_s if state.raised else rule.on_delay_s):
                continue
            before = state.output()
            state.raised, state.pending = wants, 0
            state.unacked = state.unacked or (wants and rule.latch)
            if state.output() != before:
                changes.append(Transition(k + 1, "raised" if wants else "cleared", state.value))
            elif not wants:
                changes.append(Transition(k + 1, "held", state.value))
        return changes

    def acknowledge(self, relay: int | None) -> list[Transition]:
        """Acknowledge the latched rules of one relay (1, 2) or all (None).

        Returns one "acknowledged" transition per rule that was waiting, and a "cleared"
        one for each whose output went off because its condition had already cleared.
        """
        changes = []
        for k, (rule, state) in enumerate(zip(self.rules, self._states)):
            if not state.unacked or relay is not None and rule.relay != relay:
                continue
            state.unacked = False
            changes.append(Transition(k + 1, "acknowledged", state.value))
            if not state.output():
                changes.append(Transition(k + 1, "cleared", state.value))
        return changes

    def status(self) -> AlarmStatus:
        return AlarmStatus(tuple(s.output() for s in self._states),
                           tuple(s.unacked for s in self._states),
                           tuple(s.value for s in self._states))

    def demand(self, relay: int, combine: str) -> bool:
        """Relay ``relay`` (1-based) in alarm mode: closed when any/all of its rules are on."""
        outputs = [s.output() for rule, s in zip(self.rules, self._states) if rule.relay == relay]
        if not outputs:
            return False
        return all(outputs) if combine == "all" else any(outputs)

    def latched(self) -> dict[int, int]:
        """slot -> fingerprint of every unacknowledged latch (what the store keeps)."""
        return {k + 1: rule.fingerprint()
                for k, (rule, s) in enumerate(zip(self.rules, self._states)) if s.unacked}

