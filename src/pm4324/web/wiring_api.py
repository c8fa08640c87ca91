"""`/api/wiring`: the wiring check of the newest second (docs/wiring-check.md).

The same pure check as `pm4324 check-wiring` (wiring_check/), over the snapshot the server
shows: per main and CT a status, one plain sentence and the settings lines that fix it.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from pm4324.web.api import ERRORS
from pm4324.wiring_check import check_wiring

Device = Annotated[str | None, Query(max_length=100, description="which meter (its key in a hub)")]


class MainWiring(BaseModel):
    main: int
    status: str = Field(description="ok, phase_missing or inputs_swapped")
    text: str


class CtWiring(BaseModel):
    ct: int
    status: str = Field(description="ok, reversed, wrong_phase, ambiguous, unexpected, open, "
                        "low, no_voltage or unused")
    text: str = Field(description="the verdict in one sentence")
    fix: list[str] = Field(description="settings lines (or an action) that fix it")
    readings: list[str] = Field(description="the readings that fit the expectations")
    p_w: float | None
    i_a: float | None
    angle_deg: float | None = Field(description="the current behind its element voltage")
    angles_to_phases: dict[str, float] = Field(description="the current behind V_a, V_b, V_c")


class WiringView(BaseModel):
    seconds: int
    problems: int = Field(description="wiring faults found (open CTs are listed, not counted)")
    mains: list[MainWiring]
    cts: list[CtWiring]


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def wiring_router(service: Any) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["wiring"], responses=ERRORS)

    @api.get("/wiring", summary="The wiring check of the newest second: per main and CT")
    def wiring(device: Device = None) -> WiringView:
        snap = service.snapshot(device)
        if snap.seq < 0:
            raise HTTPException(503, "no measured second yet: ask again in a second")
        d = check_wiring([snap]).to_dict()
        d["cts"] = [{k: _finite(v) for k, v in c.items()} for c in d["cts"]]
        return WiringView(**d)

    return api
