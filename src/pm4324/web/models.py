"""Response and request bodies of the API (pydantic), so the OpenAPI document states every
field and schemathesis can check each answer against it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Error(BaseModel):
    error: str = Field(description="HTTP reason phrase")
    reason: str = Field(description="what was wrong, in one sentence")
    key: str | None = Field(None, description="settings key the reason is about (settings writes)")


class Value(BaseModel):
    quantity: str
    label: str
    value: float | None = Field(description="null when the meter has no valid value this second")
    unit: str


class CtView(BaseModel):
    ct: int
    name: str
    meter: int
    main: int
    phase: Literal["a", "b", "c"]
    flags: list[str]
    values: list[Value]


class MeterView(BaseModel):
    meter: int
    name: str
    wiring: str
    main: int
    cts: list[int]
    flags: list[str]
    values: list[Value]


class MainPhase(BaseModel):
    phase: Literal["a", "b", "c"]
    v_ln: float | None
    v_ll: float | None
    thd_v_pct: float | None


class MainView(BaseModel):
    main: int
    frequency_hz: float | None
    phases: list[MainPhase]
    units: dict[str, str]
    flags: list[str]


class Harmonics(BaseModel):
    ct: int
    name: str
    orders: list[int]
    v_rms: list[float | None]
    i_rms: list[float | None]
    thd_v_pct: float | None
    thd_i_pct: float | None
    units: dict[str, str]


class Phasor(BaseModel):
    name: str
    rms: float | None
    deg: float | None = Field(description="angle of the fundamental relative to Va, -180..180")


class Waveforms(BaseModel):
    meter: int
    sample_rate_hz: float
    v: list[list[float | None]] = Field(description="Va, Vb, Vc samples of the last whole cycles")
    i: list[list[float | None]] = Field(description="the Meter's three CT currents, same samples")
    v_phasors: list[Phasor]
    i_phasors: list[Phasor]
    units: dict[str, str]


class Event(BaseModel):
    time: float
    boot: int
    second: int
    kind: str
    text: str


class FleetMember(BaseModel):
    key: str = Field(description='the meter\'s key: "local" for `pm4324 run`, its name in a hub')
    online: bool
    last_seen: float | None = Field(description="Unix time its newest second arrived")
    seq: int | None
    model: str | None


class Relay(BaseModel):
    relay: int
    closed: bool
    mode: str = Field(description='"manual" (switched by hand) or "alarm" (its rules switch it)')


class RelayWrite(BaseModel):
    closed: bool


class AlarmAck(BaseModel):
    relay: int | None = Field(None, ge=1, le=2, description="acknowledge this relay's alarms; null: all")


class EnergyReset(BaseModel):
    meter: int | None = Field(None, ge=1, le=8, description="zero this Meter (and its CTs); null: all")


class Alarm(BaseModel):
    alarm: int
    relay: int
    rule: str
    active: bool
    unacked: bool
    value: float | None


class SettingsView(BaseModel):
    toml: str = Field(description="the settings as the settings file would hold them")
    values: dict[str, Any] = Field(description="the same, as a nested object")


class SettingsWrite(BaseModel):
    changes: dict[str, Any] = Field(
        description='dotted settings keys and their new values, e.g. {"meters.2.ct_ratio": 200}',
        min_length=1)
