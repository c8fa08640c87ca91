"""Protocol faults of one meter, switched on and off while it runs: what a misbehaving meter,
its gateway or its bus does on the wire (issue #16).

Why: integrators of SCADA/BMS systems must see how their master copes with a meter that
answers late, not at all, with an exception or a broken CRC, or one whose values freeze.
Measurement faults (what is measured) live elsewhere; these change only how the protocol
servers answer, and only for the meter (unit id, node-ID) they belong to.

API (the fleet, the `pm4324 fault` command and HTTP wire it)::

    faults = ProtocolFaults("meter-7", on_change=fault_log.write)
    TcpServer(backend, faults=faults)                  # one meter
    TcpServer(None, backends={7: b}, faults={7: faults})  # a gateway (RtuServer alike)
    CanopenServer(meter, settings, faults=faults)
    faults.set("latency", ms=200, jitter_ms=100)       # start (replaces one of that kind)
    faults.set("exception", code=6, duration_s=30)     # ends by itself after 30 s
    faults.clear("latency"); faults.clear()            # end one kind; end all
    faults.active()                                    # {"exception": Fault(...)}

``set``/``clear`` may be called from any thread. Each start and end calls every
``on_change`` listener with a ``FaultChange`` (``to_dict()`` gives the JSON line: meter,
fault, parameters, state "start"/"end", time, and when it started), in the thread that caused it (the one that
called set/clear, or a timer thread for ``duration_s``). A listener must not block.

Kinds (``KINDS``; every kind also takes ``duration_s``, and the "may" kinds ``probability``,
0..1, the share of requests hit, drawn from a generator seeded by ``seed``):

=============== ====================== ================================================
kind            parameters             effect
=============== ====================== ================================================
latency         ms, jitter_ms          answers wait ms + uniform(0, jitter_ms)
no_answer       probability            the request is dropped: the master times out
exception       code, probability      exception ``code`` (1..255) instead of the answer
bad_crc         probability            RTU: the reply's CRC is wrong (master: CRC error)
split           gap_ms                 TCP: each answer in two segments, gap_ms apart
merge           window_ms              TCP: answers held up to window_ms and sent together
wrong_tid       probability            TCP: the answer carries another transaction id
stale           --                     register values frozen (each read answers what it
                                       read first after the fault began); writes still act
offline         --                     the unit is gone: silence (a gateway: 0x0B);
                                       CANopen: the node sends and hears nothing
heartbeat_loss  --                     CANopen: no heartbeat (nor node-guarding reply)
bus_off         (duration_s, 10 s)     CANopen: off the bus for the period, then back
=============== ====================== ================================================

A server ignores kinds that do not apply to it (``bad_crc`` on TCP, ``split`` on RTU).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["KINDS", "Fault", "FaultChange", "ProtocolFaults", "parse_params"]

log = logging.getLogger(__name__)

# kind -> {parameter: (default, low, high)}; ``duration_s`` is accepted by every kind.
_PROBABILITY = {"probability": (1.0, 0.0, 1.0)}
KINDS: dict[str, dict[str, tuple[float, float, float]]] = {
    "latency": {"ms": (100.0, 0.0, 60_000.0), "jitter_ms": (0.0, 0.0, 60_000.0)},
    "no_answer": dict(_PROBABILITY),
    "exception": {"code": (4, 1, 255), **_PROBABILITY},
    "bad_crc": dict(_PROBABILITY),
    "split": {"gap_ms": (50.0, 0.0, 10_000.0)},
    "merge": {"window_ms": (100.0, 1.0, 10_000.0)},
    "wrong_tid": dict(_PROBABILITY),
    "stale": {},
    "offline": {},
    "heartbeat_loss": {},
    "bus_off": {},
}
_DEFAULT_DURATION = {"bus_off": 10.0}
_INTEGER = {"code"}
MAX_DURATION_S = 366 * 86400.0


@dataclass(frozen=True)
class Fault:
    """One active fault: its kind, parameters (defaults filled in) and when it began."""

    kind: str
    params: Mapping[str, float]
    started: float  # Unix time
    duration_s: float | None = None

    def __getitem__(self, name: str) -> float:
        return self.params[name]


@dataclass(frozen=True)
class FaultChange:
    """A fault began or ended: one line of the machine-readable fault log."""

    meter: str
    fault: str
    params: Mapping[str, float]
    state: str  # "start" or "end"
    time: float  # Unix time of this start or end
    started: float  # Unix time the fault started (an end: how long it lasted)
    reason: str = ""  # an end: "cleared", "expired", "replaced"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"meter": self.meter, "fault": self.fault,
                             "params": dict(self.params), "state": self.state,
                             "time": round(self.time, 6), "started": round(self.started, 6)}
        if self.reason:
            d["reason"] = self.reason
        return d


def parse_params(kind: str, items: Iterable[str]) -> dict[str, float]:
    """``["ms=200", "jitter_ms=50"]`` -> {"ms": 200.0, "jitter_ms": 50.0}, for a command line
    (checked as ``set`` checks them)."""
    params: dict[str, float] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"{kind}: {item!r}: expected NAME=VALUE")
        try:
            params[name.strip()] = float(text)
        except ValueError:
            raise ValueError(f"{kind}: {name} = {text!r}: not a number") from None
    _checked(kind, params)
    return params


def _checked(kind: str, params: Mapping[str, float]) -> tuple[dict[str, float], float | None]:
    """The parameters with defaults filled in, and the duration; ValueError in one line."""
    spec = KINDS.get(kind)
    if spec is None:
        raise ValueError(f"unknown protocol fault {kind!r}: one of {', '.join(KINDS)}")
    out: dict[str, float] = {}
    duration = params.get("duration_s", _DEFAULT_DURATION.get(kind))
    if duration is not None and not (0 < float(duration) <= MAX_DURATION_S):
        raise ValueError(f"{kind}: duration_s = {duration!r}: must be > 0 (seconds)")
    unknown = set(params) - set(spec) - {"duration_s"}
    if unknown:
        allowed = ", ".join([*spec, "duration_s"])
        raise ValueError(f"{kind}: unknown parameter {', '.join(sorted(unknown))} "
                         f"(allowed: {allowed})")
    for name, (default, low, high) in spec.items():
        value = float(params.get(name, default))
        if not (low <= value <= high) or math.isnan(value):
            raise ValueError(f"{kind}: {name} = {params.get(name)!r}: allowed {low:g}..{high:g}")
        if name in _INTEGER:
            if value != int(value):
                raise ValueError(f"{kind}: {name} = {value!r}: must be a whole number")
            value = int(value)
        out[name] = value
    return out, None if duration is None else float(duration)


class ProtocolFaults:
    """The protocol faults of one meter (see the module docstring). Thread-safe.

    Servers read ``current`` (an immutable mapping kind -> Fault, replaced as a whole on
    every change, so a reader needs no lock); it is empty while no fault is active, which
    costs a server one truth test per request.
    """

    def __init__(self, meter: str = "", on_change: Callable[[FaultChange], None] | None = None,
                 seed: int | None = None):
        self.meter = meter
        self.current: Mapping[str, Fault] = MappingProxyType({})
        self._listeners: list[Callable[[FaultChange], None]] = [on_change] if on_change else []
        self._lock = threading.RLock()
        self._timers: dict[str, threading.Timer] = {}
        self._rng = random.Random(seed)
        self._frozen: dict[Any, Any] = {}  # stale: request -> answer, since the fault began

    # -- control -----------------------------------------------------------------------

    def add_listener(self, listener: Callable[[FaultChange], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def set(self, kind: str, **params: float) -> Fault:
        """Start a fault (replacing an active one of the same kind); ValueError for an
        unknown kind or a parameter out of range."""
        values, duration = _checked(kind, params)
        with self._lock:
            self._end(kind, "replaced")
            fault = Fault(kind, MappingProxyType(values), time.time(), duration)
            if kind == "stale":
                self._frozen = {}
            self._publish({**self.current, kind: fault})
            if duration is not None:
                timer = threading.Timer(duration, self._expire, (fault,))
                timer.daemon = True
                self._timers[kind] = timer
                timer.start()
            self._emit(FaultChange(self.meter, kind, fault.params, "start", fault.started,
                                   fault.started))
        return fault

    def clear(self, kind: str | None = None) -> None:
        """End one kind of fault (no-op if not active), or all (``None``)."""
        with self._lock:
            for k in [kind] if kind is not None else list(self.current):
                self._end(k, "cleared")

    def active(self) -> dict[str, Fault]:
        return dict(self.current)

    def _expire(self, fault: Fault) -> None:
        with self._lock:
            if self.current.get(fault.kind) is fault:
                self._end(fault.kind, "expired")

    def _end(self, kind: str, reason: str) -> None:
        fault = self.current.get(kind)
        if fault is None:
            return
        timer = self._timers.pop(kind, None)
        if timer is not None:
            timer.cancel()
        self._publish({k: f for k, f in self.current.items() if k != kind})
        self._emit(FaultChange(self.meter, kind, fault.params, "end", time.time(),
                               fault.started, reason))

    def _publish(self, faults: dict[str, Fault]) -> None:
        self.current = MappingProxyType(faults)

    def _emit(self, change: FaultChange) -> None:
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:  # a broken log must not stop the fault or the server
                log.exception("protocol fault listener failed on %s", change)

    # -- what servers ask (only while ``current`` is not empty) -------------------------

    def hit(self, kind: str) -> bool:
        """Whether this request suffers ``kind`` (active, and within its probability)."""
        fault = self.current.get(kind)
        if fault is None:
            return False
        p = fault.params.get("probability", 1.0)
        return p >= 1.0 or self._rng.random() < p

    def delay_s(self) -> float:
        """The latency to add to this answer (0 without a latency fault)."""
        fault = self.current.get("latency")
        if fault is None:
            return 0.0
        jitter = fault.params["jitter_ms"]
        return (fault.params["ms"] + (self._rng.uniform(0.0, jitter) if jitter else 0.0)) / 1e3

    def frozen(self, key: Any, answer: Callable[[], Any]) -> Any:
        """While ``stale``: the answer ``key`` got first since the fault began."""
        frozen = self._frozen
        if key not in frozen:
            frozen[key] = answer()
        return frozen[key]
