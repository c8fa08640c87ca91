"""One switch for every fault of a running meter: list, set and clear, and the log.

``FaultSwitch`` fronts the simulator's ``FaultBook`` (measurement and device faults) and the
protocol servers' ``ProtocolFaults`` for the HTTP API (`/api/faults`, `pm4324 fault`), and
writes every start and end of the book's faults to a ``FaultLog`` (the protocol faults log
themselves, app.py). Times: the book counts scenario seconds; the meter's clock is
``start_time`` + those. Protocol faults are named by their kind (one of each at a time) and
have the target ``protocol``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pm4324.device.meter import Meter
from pm4324.faults.log import FaultLog, iso
from pm4324.protocols.faults import KINDS as PROTOCOL_KINDS
from pm4324.protocols.faults import Fault as ProtocolFault
from pm4324.protocols.faults import ProtocolFaults
from pm4324.sources.faults import KINDS, Fault, FaultBook, FaultError, plain_params


class FaultSwitch:
    """The faults of one meter, as the HTTP API and the log see them."""

    def __init__(self, book: FaultBook | None, meter_id: str, clock_at: Callable[[float], float],
                 log: FaultLog | None = None, protocol: ProtocolFaults | None = None):
        self.book, self.meter_id, self.clock_at, self.log = book, meter_id, clock_at, log
        self.protocol = protocol
        if book is not None and log is not None:
            book.add_listener(self._logged)

    def kinds(self) -> dict[str, dict[str, Any]]:
        """Every kind this meter takes: its targets, parameters (defaults) and what it does."""
        out = {} if self.book is None else {
            name: {"targets": list(k.targets), "parameters": plain_params(k.params),
                   "text": k.text, "device": k.device} for name, k in KINDS.items()}
        if self.protocol is not None:
            for name, spec in PROTOCOL_KINDS.items():
                out[name] = {"targets": ["protocol"], "device": False,
                             "parameters": {p: d for p, (d, _, _) in spec.items()},
                             "text": "protocol fault (docs/modbus.md, docs/canopen.md)"}
        return out

    def list(self) -> list[dict[str, Any]]:
        rows = []
        if self.book is not None:
            now = self.book.now()
            rows = [self._row(f, now) for f in self.book.faults]
        if self.protocol is not None:
            rows += [_protocol_row(f) for f in self.protocol.active().values()]
        return rows

    def set(self, kind: str, target: str, params: Mapping[str, Any] | None,
            duration_s: float | None) -> dict[str, Any]:
        """Start a fault at the meter's next sample (a protocol fault at once); ``FaultError``
        (a ValueError) when it cannot be."""
        if self.protocol is not None and kind in PROTOCOL_KINDS:
            if target not in ("protocol", "all"):
                raise FaultError(f"target = {target!r}: {kind} is a protocol fault: its target "
                                 "is protocol (the meter's protocol servers)")
            extra = {} if duration_s is None else {"duration_s": duration_s}
            return _protocol_row(self.protocol.set(kind, **dict(params or {}), **extra))
        if self.book is None:
            raise FaultError("this meter's source is not the simulator: measurement faults "
                             "need `pm4324 run` on a scenario")
        fault = self.book.set(kind, target, params, duration_s)
        return self._row(fault, self.book.now())

    def clear(self, fault_id: int | str | None = None) -> list[dict[str, Any]]:
        """End one fault (its id; a protocol fault: its kind) or all; unknown: ``KeyError``."""
        ended: list[dict[str, Any]] = []
        if self.protocol is not None and (fault_id is None or isinstance(fault_id, str)):
            active = self.protocol.active()
            if isinstance(fault_id, str) and fault_id not in active:
                raise KeyError(fault_id)
            ended += [{**_protocol_row(f), "state": "ended"} for f in active.values()
                      if fault_id in (None, f.kind)]
            self.protocol.clear(fault_id)
        if isinstance(fault_id, str):
            if self.protocol is None:
                raise KeyError(fault_id)
            return ended
        if self.book is None:
            if fault_id is not None:
                raise KeyError(fault_id)
            return ended
        if fault_id is not None and all(f.id != fault_id for f in self.book.faults):
            raise KeyError(fault_id)
        now = self.book.now()
        return ended + [self._row(f, now) for f in self.book.clear(fault_id)]

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


def _protocol_row(f: ProtocolFault) -> dict[str, Any]:
    end = None if f.duration_s is None else f.started + f.duration_s
    return {"id": f.kind, "kind": f.kind, "target": "protocol", "parameters": dict(f.params),
            "start_s": None, "end_s": None, "live": True, "state": "active", "origin": "live",
            "start": iso(f.started), "end": iso(end)}


def offline_while_off(meter: Meter, protocol: ProtocolFaults) -> None:
    """A meter switched off by a ``power_cycle`` fault does not answer: its protocol servers
    are ``offline`` (protocols/faults.py) until it powers up."""
    meter.add_power_listener(lambda on: protocol.clear("offline") if on
                             else protocol.set("offline"))
