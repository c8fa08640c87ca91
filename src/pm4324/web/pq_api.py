"""`/api/pq`: power quality of the newest second (docs/power-quality.md).

Per main its latest IEC 61000-4-30 aggregates (150/180 cycles, 10 minutes, 2 hours, 10-s
frequency), events under way and Urms(1/2) extremes of the second; per CT its latest
10-minute current, THD and TDD; and the newest voltage events of the meter's event log.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from pm4324.web.api import ERRORS
from pm4324.web.models import Event

Device = Annotated[str | None, Query(max_length=100, description="which meter (its key in a hub)")]
VOLTAGE_EVENTS = ("voltage_dip", "voltage_swell", "voltage_interruption", "voltage_change")


class PqView(BaseModel):
    mains: list[dict[str, Any]] = Field(description="per main: udin_v, in_progress, "
                                        "urms_half_min/max, short, ten_minutes, two_hours, "
                                        "frequency_10s, harmonics_10min, frequency_10min")
    cts: list[dict[str, Any]] = Field(description="per CT: the latest 10-minute i_rms, "
                                      "thd_i_pct, tdd_pct, flagged (empty before the first)")
    events: list[Event] = Field(description="the newest voltage events of the log, newest first")


def _finite(x: Any) -> Any:
    """JSON has no NaN: None instead, all the way down."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def pq_router(service: Any) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["power quality"], responses=ERRORS)

    @api.get("/pq", summary="Power quality: the mains' aggregates, the CTs' 10-minute values, "
             "the newest voltage events")
    def pq(device: Device = None,
           limit: Annotated[int, Query(ge=0, le=1000)] = 50) -> PqView:
        snap = service.snapshot(device)
        if snap.pq is None:
            raise HTTPException(404, "power quality is off ([pq] enabled = false) or this "
                                "meter does not report it")
        logged = list(getattr(service.local, "events", ())) if device in (None, service.primary) \
            else []
        chosen = [e for e in reversed(logged) if e.kind in VOLTAGE_EVENTS][:limit]
        d = _finite(snap.pq)
        return PqView(mains=d["mains"], cts=d["cts"],
                      events=[Event(**e.to_dict()) for e in chosen])

    return api
