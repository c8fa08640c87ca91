"""Answer bodies of the history API (pydantic), so the OpenAPI document states every field.

Times are Unix seconds; dates and months are local to the history's time zone; a value the
history does not hold is null (never a made-up number)."""

from __future__ import annotations

from pydantic import BaseModel, Field

ENERGY_UNITS = {"wh_import": "Wh", "wh_export": "Wh", "varh_q1": "varh", "varh_q2": "varh",
                "varh_q3": "varh", "varh_q4": "varh", "vah": "VAh"}


class Label(BaseModel):
    element: str = Field(description="ct1..ct24, meter1..meter8 or main1..main2")
    label: str = Field(description="its circuit name from the settings, or the bare name")


class Span(BaseModel):
    device: str = Field(description="the meter's key in the history")
    enabled: bool = Field(description="false when this server keeps no history")
    time_zone: str | None = Field(description="the zone the history's days are cut in")
    first: float | None = Field(description="start of the oldest 15-minute interval held")
    last: float | None = Field(description="start of the newest 15-minute interval held")
    today: str = Field(description="the local date of the newest second (ISO)")
    labels: list[Label]


class Trend(BaseModel):
    element: str
    label: str
    quantity: str
    unit: str
    resolution: str = Field(description='the stored resolution read: "raw", "1min" or "15min" '
                            '("" when there is no history)')
    start: float
    end: float
    t: list[float] = Field(description="start of each point's bucket")
    mean: list[float | None]
    min: list[float | None]
    max: list[float | None]


class EnergyRow(BaseModel):
    period: str = Field(description="local date (day) or YYYY-MM (month)")
    seconds: int = Field(description="seconds with a reading in the period")
    energy: dict[str, float] = Field(description="energy per register in the period (units: `units`)")


class Energy(BaseModel):
    element: str
    label: str
    period: str
    units: dict[str, str]
    rows: list[EnergyRow]


class Peak(BaseModel):
    period: str = Field(description="local date or YYYY-MM ('' for the whole range)")
    kw: float
    at: float = Field(description="start of the 15-minute interval with the maximum")


class Demand(BaseModel):
    element: str
    label: str
    t: list[float] = Field(description="start of each 15-minute interval")
    seconds: list[int] = Field(description="seconds with a reading (900 = complete)")
    kw: list[float] = Field(description="mean import kW of the interval")
    kvar: list[float] = Field(description="mean kvar (QI + QII)")
    kva: list[float]
    max: Peak | None = Field(description="the range's maximum kW demand (null: no interval)")


class MaxDemand(BaseModel):
    element: str
    label: str
    period: str
    rows: list[Peak]


class Gap(BaseModel):
    start: float
    end: float
    reason: str


class GapSummary(BaseModel):
    device: str
    gaps: int = Field(description="gaps in the window not filled from the meter's own history")
    missing_s: float = Field(description="their total length, seconds")
    backfilled: int = Field(description="gaps filled from the meter's own history (docs/hub.md)")
    last_end: float | None = Field(description="end of the newest gap in the window")


class HistoryEvent(BaseModel):
    time: float
    kind: str
    text: str


class TodayRow(BaseModel):
    element: str
    label: str
    energy: dict[str, float | None] = Field(description="energy since local midnight per register "
                                            "(Wh, varh, VAh; null before the first stored minute)")


class Today(BaseModel):
    date: str
    units: dict[str, str]
    rows: list[TodayRow]


class BackfillMinute(BaseModel):
    t: int = Field(description="start of the minute")
    values: list[float | None] = Field(description="the 1-minute series, in `series` order")


class BackfillInterval(BaseModel):
    t: int = Field(description="start of the 15-minute interval")
    seconds: int
    agg: list[list[float | None]] = Field(description="mean, min, max of every channel")
    energy: list[list[list[float | None]]] = Field(
        description="[energy in it, registers at its start, registers at its end] x 32 x 7")


class Backfill(BaseModel):
    device: str
    start: float
    end: float
    series: list[str] = Field(description="names of the 1-minute values (element.quantity.stat)")
    channels: int = Field(description="channels of each interval's agg rows")
    registers: list[str]
    minutes: list[BackfillMinute]
    intervals: list[BackfillInterval]
