"""Measurement and device faults: what they are, how they are written, when they are active.

A fault is one ``kind`` on one ``target`` with its parameters, active from ``start_s`` to
``end_s`` (scenario seconds; no end = until cleared). Scenarios schedule them (``[[faults]]``,
docs/scenarios.md); a running meter takes them live (``FaultBook.set``/``clear``). The
simulator applies measurement faults to its phasors (linear faults: the scenario's truth
follows exactly) or to its samples (a DC offset, CT saturation as clipping); the device
applies the device faults (energy counters near rollover, a power cycle).

Targets: ``ctN`` (1..24), ``mainM`` (1..2), ``mainM.p`` (one phase of a main, p = a|b|c),
``meterN`` (1..8) or ``all`` for the energy counters.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pm4324.config.settings import N_CTS, N_METERS, PHASES

INF = math.inf


class FaultError(ValueError):
    """A fault cannot be used as written; the message says which key and what is allowed."""


@dataclass(frozen=True)
class Kind:
    """One kind of fault: the targets it takes, its parameters and their defaults."""

    targets: tuple[str, ...]  # "ct", "main", "phase" (mainM.p), "meter", "all"
    params: Mapping[str, Any]
    text: str
    device: bool = False  # applied by the device, not by the simulator


KINDS: dict[str, Kind] = {
    "reversed_ct": Kind(("ct",), {}, "the CT's leads are swapped: its current is inverted"),
    "wrong_phase": Kind(("ct",), {"phase": "b", "from": ""},
                        "the CT sits on another phase's conductor: its current turns by the "
                        "angle from `from` (default: the phase of the scenario's load on the CT) to `phase`"),
    "open_ct": Kind(("ct",), {}, "the CT is open or unplugged: no current"),
    "ct_saturation": Kind(("ct",), {"clip_a": 100.0},
                          "the CT's secondary flattens at clip_a primary amperes (peak)"),
    "vt_loss": Kind(("phase",), {"retained": 0.0},
                    "a voltage input is lost (a blown fuse): it keeps `retained` of its voltage"),
    "phase_swap": Kind(("main",), {"order": ["a", "c", "b"]},
                       "the voltage inputs a, b, c carry the phases listed in `order`"),
    "frequency_excursion": Kind(("main",), {"frequency_hz": 51.0},
                                "the main's frequency is frequency_hz instead of the scenario's"),
    "harmonic_rich": Kind(("ct",), {"harmonics": {3: 0.3, 5: 0.2, 7: 0.1}},
                          "the CT's current gains harmonics: order = fraction of its fundamental "
                          "(or [fraction, phase deg])"),
    "dc_offset": Kind(("ct", "phase"), {"offset": 1.0},
                      "a DC offset on the input: primary amperes on a CT, volts on a phase"),
    "gain_drift": Kind(("ct", "phase"), {"pct_per_hour": 1.0},
                       "the input's gain drifts linearly from 1 at the start, in % per hour"),
    "energy_rollover": Kind(("meter", "all"), {"below_kwh": 1.0},
                            "the energy counters of a Meter (and its CTs) jump to below_kwh short "
                            "of their rollover (42,949,672.95 kWh, the uint32 registers)",
                            device=True),
    "power_cycle": Kind(("all",), {"off_s": 2.0},
                        "the meter is off for off_s whole seconds, then powers up: energy "
                        "kept, relays per their power_up rule", device=True),
}
# Faults applied to the samples after synthesis (not expressible as phasors of the orders).
SAMPLE_KINDS = {"ct_saturation", "dc_offset"}


@dataclass(frozen=True)
class Target:
    kind: str  # "ct", "main", "phase", "meter", "all"
    index: int = 0  # 1-based CT, main or Meter number (0 for "all")
    phase: str = ""

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        return f"{self.kind if self.kind != 'phase' else 'main'}{self.index}" + (
            f".{self.phase}" if self.phase else "")


def parse_target(text: Any, allowed: tuple[str, ...], key: str = "target") -> Target:
    forms = {"ct": "ctN (1..24)", "main": "mainM (1..2)", "phase": "mainM.a|b|c",
             "meter": "meterN (1..8)", "all": '"all"'}
    want = " or ".join(forms[a] for a in allowed)
    if not isinstance(text, str):
        raise FaultError(f"{key} = {text!r}: must be {want}")
    t = text.strip().lower()
    found: Target | None = None
    if t == "all":
        found = Target("all")
    elif t.startswith("ct") and t[2:].isdigit() and 1 <= int(t[2:]) <= N_CTS:
        found = Target("ct", int(t[2:]))
    elif t.startswith("meter") and t[5:].isdigit() and 1 <= int(t[5:]) <= N_METERS:
        found = Target("meter", int(t[5:]))
    elif t.startswith("main"):
        num, _, ph = t[4:].partition(".")
        if num in ("1", "2") and (ph in PHASES or not ph):
            found = Target("phase" if ph else "main", int(num), ph)
    if found is None or found.kind not in allowed:
        raise FaultError(f"{key} = {text!r}: must be {want}")
    return found


@dataclass(frozen=True)
class Fault:
    kind: str
    target: Target
    params: Mapping[str, Any] = field(default_factory=dict)
    start_s: float = 0.0
    end_s: float = INF
    id: int = 0
    live: bool = False  # set at run time (not in the scenario)

    def active(self, t: float) -> bool:
        return self.start_s <= t < self.end_s

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "target": str(self.target),
                "parameters": plain_params(self.params), "start_s": self.start_s,
                "end_s": None if self.end_s == INF else self.end_s, "live": self.live}


def plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as JSON takes them (tuples as lists, harmonic orders as strings)."""
    def plain(x: Any) -> Any:
        if isinstance(x, Mapping):
            return {str(k): plain(v) for k, v in x.items()}
        return list(x) if isinstance(x, tuple) else x

    return {k: plain(x) for k, x in params.items()}


def make_fault(kind: Any, target: Any, params: Mapping[str, Any] | None = None,
               start_s: float = 0.0, end_s: float = INF, id: int = 0, live: bool = False,
               prefix: str = "") -> Fault:
    """A validated fault; ``FaultError`` names the key (after ``prefix``) and what is allowed."""
    if kind not in KINDS:
        raise FaultError(f"{prefix}kind = {kind!r}: must be one of {', '.join(KINDS)}")
    spec = KINDS[kind]
    tgt = parse_target(target, spec.targets, prefix + "target")
    given = dict(params or {})
    unknown = sorted(set(given) - set(spec.params))
    if unknown:
        known = ", ".join(spec.params) or "none"
        raise FaultError(f"{prefix}{unknown[0]} = {given[unknown[0]]!r}: not a parameter of "
                         f"{kind} (its parameters: {known})")
    out = {k: _param(kind, k, given.get(k, d), prefix) for k, d in spec.params.items()}
    if not (isinstance(start_s, int | float) and isinstance(end_s, int | float)
            and 0 <= start_s < end_s):
        raise FaultError(f"{prefix}start_s/end_s = {start_s!r}/{end_s!r}: need 0 <= start_s < end_s")
    if kind == "power_cycle":  # whole seconds: the meter is off for whole blocks
        if start_s != int(start_s) or out["off_s"] != int(out["off_s"]):
            raise FaultError(f"{prefix}start_s/off_s = {start_s!r}/{out['off_s']!r}: a power "
                             "cycle starts on a whole second and lasts whole seconds")
        end_s = start_s + out["off_s"]
    return Fault(kind, tgt, out, float(start_s), float(end_s), id, live)


def _param(kind: str, key: str, value: Any, prefix: str) -> Any:
    def bad(allowed: str) -> FaultError:
        return FaultError(f"{prefix}{key} = {value!r}: {allowed}")

    if key in ("phase", "from"):
        if value not in PHASES and not (key == "from" and value == ""):
            raise bad('must be "a", "b" or "c"')
        return value
    if key == "order":
        if not (isinstance(value, list | tuple) and sorted(value) == list(PHASES)):
            raise bad('must list "a", "b", "c" in some order, e.g. ["a", "c", "b"]')
        return tuple(value)
    if key == "harmonics":
        if not isinstance(value, Mapping) or not value:
            raise bad("must be a table like { 3 = 0.3, 5 = [0.2, 180] }")
        out = {}
        for h, v in value.items():
            if not str(h).isdigit() or not 2 <= int(h) <= 50:
                raise bad("harmonic orders are 2 to 50")
            frac, deg = (v, 0.0) if isinstance(v, int | float) else (tuple(v) + (0.0,))[:2]
            if isinstance(frac, bool) or not isinstance(frac, int | float) or not 0 <= frac <= 2:
                raise bad("fractions of the fundamental are 0 to 2")
            out[int(h)] = (float(frac), float(deg))
        return out
    limits = {"clip_a": (1e-3, 1e6), "retained": (0.0, 1.0), "frequency_hz": (40.0, 70.0),
              "offset": (-1e6, 1e6), "pct_per_hour": (-1e4, 1e4), "below_kwh": (0.0, 1e6),
              "off_s": (1.0, 86400.0)}
    lo, hi = limits[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise bad(f"must be a number from {lo:g} to {hi:g}")
    return float(value)


def parse_faults(raw: Any, src: str) -> tuple[Fault, ...]:
    """``[[faults]]`` tables of a scenario (kind, target, start_s, end_s, parameters)."""
    if not isinstance(raw, list):
        raise FaultError(f"{src}: faults = {raw!r}: must be [[faults]] tables")
    out = []
    for j, t in enumerate(raw):
        p = f"{src}: faults.{j}."
        if not isinstance(t, dict):
            raise FaultError(f"{p[:-1]} = {t!r}: must be a table")
        params = {k: v for k, v in t.items() if k not in ("kind", "target", "start_s", "end_s")}
        out.append(make_fault(t.get("kind"), t.get("target"), params, t.get("start_s", 0.0),
                              t.get("end_s", INF), id=j + 1, prefix=p))
    return tuple(out)


Listener = Callable[[str, Fault, float], None]  # ("start" | "end", fault, scenario time)


class FaultBook:
    """The faults of one running meter: the scenario's and the live ones, and who hears of
    their starts and ends (the fault log, the device). Thread-safe: the HTTP thread sets,
    the meter's step thread reads (one tuple, replaced whole)."""

    def __init__(self, scheduled: tuple[Fault, ...] = (), now: Callable[[], float] = lambda: 0.0):
        self.faults: tuple[Fault, ...] = scheduled
        self.now = now  # scenario seconds of the next sample
        self._lock = threading.Lock()
        self._next_id = max((f.id for f in scheduled), default=0) + 1
        self._listeners: list[Listener] = []
        self._started: set[int] = set()
        self._ended: set[int] = set()

    def add_listener(self, callback: Listener) -> None:
        self._listeners.append(callback)

    def active(self, t: float) -> tuple[Fault, ...]:
        faults = self.faults
        return tuple(f for f in faults if f.active(t)) if faults else ()

    def boundaries(self, t0: float, t1: float) -> list[float]:
        """Starts and ends strictly inside (t0, t1): where a block must be split."""
        return sorted({b for f in self.faults for b in (f.start_s, f.end_s) if t0 < b < t1})

    def set(self, kind: str, target: str, params: Mapping[str, Any] | None = None,
            duration_s: float | None = None) -> Fault:
        """Start a fault at the next sample (for duration_s, or until cleared)."""
        with self._lock:
            start = self.now()
            end = INF if duration_s is None else start + duration_s
            fault = make_fault(kind, target, params, start, end, self._next_id, live=True)
            self._next_id += 1
            self.faults = self.faults + (fault,)
        return fault

    def clear(self, fault_id: int | None = None) -> list[Fault]:
        """End one fault (or every active or pending one) at the next sample."""
        with self._lock:
            now, ended, kept = self.now(), [], []
            for f in self.faults:
                if (fault_id is None or f.id == fault_id) and f.end_s > now:
                    if f.start_s >= now:  # not started yet: drop it
                        ended.append(f)
                        continue
                    f = Fault(f.kind, f.target, f.params, f.start_s, now, f.id, f.live)
                    ended.append(f)
                kept.append(f)
            self.faults = tuple(kept)
        return ended

    def advance(self, t: float) -> None:
        """Tell the listeners which faults started or ended before scenario time t (the end
        of what has been synthesised)."""
        news = []  # (time, end before start at one instant, event, fault), told in time order
        for f in self.faults:
            if f.start_s < t and f.id not in self._started:
                self._started.add(f.id)
                news.append((f.start_s, 1, "start", f))
            if f.end_s <= t and f.id in self._started and f.id not in self._ended:
                self._ended.add(f.id)
                news.append((f.end_s, 0, "end", f))
        for when, _, event, f in sorted(news, key=lambda x: x[:2]):
            self._tell(event, f, when)

    def _tell(self, event: str, fault: Fault, t: float) -> None:
        for callback in self._listeners:
            callback(event, fault, t)
