"""The fleet's faults on its HTTP API: `/api/faults?device=KEY` and `pm4324 fault --device
KEY` switch one member's measurement, device and protocol faults (docs/fleet.md).

Each member is fronted by the single meter's ``FaultSwitch`` (the same rows, kinds and
errors as `pm4324 run`); its measurement faults go through the fleet's books, so the
physics workers hear of them and the fleet's log writes them (the switch logs nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pm4324.config.security_settings import SecuritySettings
from pm4324.faults.switch import FaultSwitch
from pm4324.fleet.faults import FleetFaults
from pm4324.protocols.faults import KINDS as PROTOCOL_KINDS


class _MemberSwitch(FaultSwitch):
    def __init__(self, faults: FleetFaults, j: int, clock_at: Callable[[float], float]):
        super().__init__(faults.books[j], faults.keys[j], clock_at, None, faults.protocol[j])
        self._fleet, self._key = faults, faults.keys[j]

    def set(self, kind: str, target: str, params: Mapping[str, Any] | None,
            duration_s: float | None) -> dict[str, Any]:
        if kind in PROTOCOL_KINDS:
            return super().set(kind, target, params, duration_s)
        fault = self._fleet.set(self._key, kind, target, params, duration_s)
        assert self.book is not None
        return self._row(fault, self.book.now())

    def clear(self, fault_id: int | str | None = None) -> list[dict[str, Any]]:
        if isinstance(fault_id, str):
            return super().clear(fault_id)
        assert self.book is not None
        if fault_id is not None and all(f.id != fault_id for f in self.book.faults):
            raise KeyError(fault_id)
        now = self.book.now()
        ended: list[dict[str, Any]] = []
        if fault_id is None:  # every protocol fault too
            ended = [{**r, "state": "ended"} for r in super().list() if r["target"] == "protocol"]
            self._fleet.protocol[self._fleet.index[self._key]].clear()
        return ended + [self._row(f, now) for f in self._fleet.clear(self._key, fault_id)]


class FleetFaultControl:
    """``web.faults_api.FaultControl`` of a fleet: every call names a member (``device``)."""

    def __init__(self, faults: FleetFaults, clock_at: Callable[[float], float],
                 security: SecuritySettings):
        self._faults, self._clock_at = faults, clock_at
        self.security = security  # who may switch faults: the members' [security]
        self._switches: dict[int, _MemberSwitch] = {}

    def for_device(self, key: str | None) -> _MemberSwitch:
        if key is None:
            raise KeyError("this server shows a fleet: name the meter with ?device=KEY "
                           "(pm4324 fault --device KEY)")
        j = self._faults.member(key)
        if j not in self._switches:
            self._switches[j] = _MemberSwitch(self._faults, j, self._clock_at)
        return self._switches[j]

    # without a device (never reached: the API asks for_device first)
    def kinds(self) -> dict[str, dict[str, Any]]:
        return self.for_device(None).kinds()

    def list(self) -> list[dict[str, Any]]:
        return self.for_device(None).list()

    def set(self, kind: str, target: str, params: Mapping[str, Any] | None,
            duration_s: float | None) -> dict[str, Any]:
        return self.for_device(None).set(kind, target, params, duration_s)

    def clear(self, fault_id: int | str | None = None) -> list[dict[str, Any]]:
        return self.for_device(None).clear(fault_id)
