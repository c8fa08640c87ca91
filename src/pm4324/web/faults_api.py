"""`/api/faults`: list, set and clear the running meter's faults (docs/faults.md).

Setting and clearing need a token whose role has the ``settings`` right and are audited by
the guard like every write. The web layer knows faults only through ``FaultControl`` (the
composition root passes the meter's ``faults.switch.FaultSwitch``): services never import
the simulator or the protocols.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from pm4324.security.guard import Write
from pm4324.security.roles import Right
from pm4324.web.api import ERRORS
from pm4324.web.auth import authorize

Auth = Annotated[str | None, Header(description="Bearer TOKEN of [security.tokens] (writes)")]
Device = Annotated[str | None, Query(max_length=64, description="a fleet's member, by key "
                                     "(`pm4324 fleet --http`); none: the meter itself")]


class FaultControl(Protocol):
    def kinds(self) -> dict[str, dict[str, Any]]: ...
    def list(self) -> list[dict[str, Any]]: ...
    def set(self, kind: str, target: str, params: Mapping[str, Any] | None,
            duration_s: float | None) -> dict[str, Any]: ...
    def clear(self, fault_id: int | str | None = None) -> list[dict[str, Any]]: ...


class FaultView(BaseModel):
    id: int | str = Field(description="a number; a protocol fault: its kind")
    kind: str
    target: str
    parameters: dict[str, Any]
    state: str = Field(description="pending, active or ended")
    origin: str = Field(description="scenario (scheduled) or live (set at run time)")
    live: bool
    start_s: float | None = Field(description="scenario seconds (null: a protocol fault)")
    end_s: float | None = Field(description="scenario seconds; null: until cleared")
    start: str | None = Field(description="on the meter's clock, ISO 8601 UTC")
    end: str | None


class FaultWrite(BaseModel):
    kind: str = Field(max_length=40, description="a kind of GET /api/fault-kinds")
    target: str = Field(max_length=40, description="ctN, mainM, mainM.p, meterN, all, or "
                        "protocol (a protocol fault)")
    parameters: dict[str, Any] = Field(default_factory=dict)
    duration_s: float | None = Field(None, gt=0, le=1e9, description="null: until cleared")


def fault_router(control: FaultControl | None, guard: Any, meter: Any) -> APIRouter:
    """The routes; ``control`` None (no simulator behind this server): empty lists, and
    setting answers 409."""
    api = APIRouter(prefix="/api", tags=["faults"], responses=ERRORS)

    def allow(request: Request, authorization: str | None, writes: list[Write]):
        # a fleet (no local meter) authorizes with its members' [security] (its control's)
        security = meter.settings.security if meter is not None \
            else getattr(control, "security", None)
        if security is None:
            raise HTTPException(404, "this server has no local meter")
        return authorize(guard, security, request, authorization, writes)

    def need(device: str | None = None) -> FaultControl:
        if control is None:
            raise HTTPException(409, "this meter has no fault switch: faults need `pm4324 run` "
                                "on the simulator")
        for_device = getattr(control, "for_device", None)
        if device is None and for_device is None:
            return control
        if for_device is None:
            raise HTTPException(404, f"no meter {device!r} here: this server has one meter "
                                "(leave out ?device=)")
        try:
            return for_device(device)
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0]) if exc.args else "no such meter") from None

    @api.get("/faults", summary="The meter's faults: scheduled by its scenario and set live")
    def faults(device: Device = None) -> list[FaultView]:
        return [FaultView(**f) for f in (need(device).list() if control else [])]

    @api.get("/fault-kinds", summary="The kinds of fault: targets, parameters (defaults), meaning")
    def kinds(device: Device = None) -> dict[str, dict[str, Any]]:
        return need(device).kinds() if control else {}

    @api.post("/faults", summary="Start a fault at the next sample (right: settings); audited")
    def set_fault(body: FaultWrite, request: Request, authorization: Auth = None,
                  device: Device = None) -> FaultView:
        what = f"fault {body.kind} on {body.target}" + (f" of {device}" if device else "")
        writes = [Write(Right.SETTINGS, what, "", f"{body.parameters or 'defaults'}"
                        + (f" for {body.duration_s:g} s" if body.duration_s else ""))]
        client = allow(request, authorization, writes)
        try:
            row = need(device).set(body.kind, body.target, body.parameters, body.duration_s)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        guard.accepted(client, writes)
        return FaultView(**row)

    @api.delete("/faults/{fault_id}", summary="End one fault: its id, or a protocol fault's "
                "kind (right: settings)")
    def clear_one(fault_id: Annotated[str, Path(pattern=r"^[a-z0-9_]{1,40}$")], request: Request,
                  authorization: Auth = None, device: Device = None) -> list[FaultView]:
        writes = [Write(Right.SETTINGS, f"fault {fault_id}" + (f" of {device}" if device else ""),
                        "set", "cleared")]
        client = allow(request, authorization, writes)
        try:
            rows = need(device).clear(int(fault_id) if fault_id.isdigit() else fault_id)
        except KeyError:
            raise HTTPException(404, f"no fault {fault_id}: GET /api/faults lists them") from None
        guard.accepted(client, writes)
        return [FaultView(**r) for r in rows]

    @api.delete("/faults", summary="End every fault at the next sample (right: settings)")
    def clear_all(request: Request, authorization: Auth = None,
                  device: Device = None) -> list[FaultView]:
        writes = [Write(Right.SETTINGS, "every fault" + (f" of {device}" if device else ""),
                        "set", "cleared")]
        client = allow(request, authorization, writes)
        rows = need(device).clear(None)
        guard.accepted(client, writes)
        return [FaultView(**r) for r in rows]

    return api
