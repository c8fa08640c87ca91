"""One switch for every fault of a running meter: list, set and clear, and the log.

``FaultSwitch`` fronts the simulator's ``FaultBook`` (measurement and device faults) for the
HTTP API (`/api/faults`, `pm4324 fault`) and writes every start and end to a ``FaultLog``.
Times: the book counts scenario seconds; the meter's clock is ``start_time`` + those.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pm4324.faults.log import FaultLog, iso
from pm4324.sources.faults import KINDS, Fault, FaultBook, FaultError, plain_params


class FaultSwitch:
    """The faults of one meter, as the HTTP API and the log see them."""

    def __init__(self, book: FaultBook | None, meter_id: str, clock_at: Callable[[float], float],
                 log: FaultLog | None = None):
        self.book, self.meter_id, self.clock_at, self.log = book, meter_id, clock_at, log
        if book is not None and log is not None:
            book.add_listener(self._logged)

    def kinds(self) -> dict[str, dict[str, Any]]:
        """Every kind this meter takes: its targets, parameters (defaults) and what it does."""
        if self.book is None:
            return {}
        return {name: {"targets": list(k.targets), "parameters": plain_params(k.params),
                       "text": k.text, "device": k.device} for name, k in KINDS.items()}

    def list(self) -> list[dict[str, Any]]:
        if self.book is None:
            return []
        now = self.book.now()
        return [self._row(f, now) for f in self.book.faults]

    def set(self, kind: str, target: str, params: Mapping[str, Any] | None,
            duration_s: float | None) -> dict[str, Any]:
        """Start a fault at the meter's next sample; ``FaultError`` when it cannot be."""
        if self.book is None:
            raise FaultError("this meter's source is not the simulator: measurement faults "
                             "need `pm4324 run` on a scenario")
        fault = self.book.set(kind, target, params, duration_s)
        return self._row(fault, self.book.now())

    def clear(self, fault_id: int | None = None) -> list[dict[str, Any]]:
        """End one fault (or all); an unknown id is a ``KeyError``."""
        if self.book is None:
            return []
        if fault_id is not None and all(f.id != fault_id for f in self.book.faults):
            raise KeyError(fault_id)
        now = self.book.now()
        return [self._row(f, now) for f in self.book.clear(fault_id)]

    def _row(self, f: Fault, now: float) -> dict[str, Any]:
        state = "pending" if now < f.start_s else "active" if now < f.end_s else "ended"
        d = f.to_dict()
        end = None if d["end_s"] is None else self.clock_at(f.end_s)
        return {**d, "state": state, "origin": "live" if f.live else "scenario",
                "start": iso(self.clock_at(f.start_s)), "end": iso(end)}

    def _logged(self, event: str, f: Fault, t: float) -> None:
        assert self.log is not None
        end = self.clock_at(f.end_s) if event == "end" else None
        self.log.write(event, self.meter_id, f.kind, str(f.target), f.id,
                       plain_params(f.params), "live" if f.live else "scenario",
                       self.clock_at(f.start_s), end, start_s=f.start_s,
                       end_s=f.end_s if event == "end" else None)
