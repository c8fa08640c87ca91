"""The JSON API (/api/...), ``/metrics`` and the per-second stream.

FastAPI because it derives the OpenAPI 3 document from the same type hints that validate
requests and shape answers (so the spec cannot drift from the code, and schemathesis tests
the code against it), it runs on the asyncio loop the meter already uses, and it is among
the best-kept Python web frameworks (Starlette + pydantic underneath).
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator
from concurrent.futures import Future
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pm4324.config.settings import Settings, SettingsError
from pm4324.config.settings_file import settings_to_toml
from pm4324.config.settings_parse import parse_settings
from pm4324.config.settings_writeback import SettingsConflict
from pm4324.registers.backend import ACK_WAIT_S, MeterControl, on_disk
from pm4324.security.guard import Guard, Write
from pm4324.security.roles import Client, Right
from pm4324.snapshot import Snapshot
from pm4324.web import metrics, views
from pm4324.web.auth import authorize
from pm4324.web.feed import Feed
from pm4324.web.fleet import Fleet
from pm4324.web.models import (
    Alarm,
    AlarmAck,
    CtView,
    EnergyReset,
    Error,
    Event,
    FleetMember,
    Harmonics,
    MainView,
    MeterView,
    Relay,
    RelayWrite,
    SettingsView,
    SettingsWrite,
    Waveforms,
)

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Error} for code in (400, 401, 403, 404, 409, 422, 503)}
STREAM_KEEPALIVE_S = 15.0  # a comment line when no second came (proxies drop idle streams)
CtNo = Annotated[int, Path(ge=1, le=24, description="CT number 1..24")]
Device = Annotated[str | None, Query(max_length=100, description="which meter (its key in a hub); "
                                     "default: this server's own or first meter")]
MeterNo = Annotated[int, Path(ge=1, le=8, description="Meter number 1..8")]
Auth = Annotated[str | None, Header(description="Bearer TOKEN of [security.tokens] (writes)")]


class Service:
    """What the routes need: the meters shown (``fleet``; ``primary`` is the default one and
    the one streamed), the local meter for writes (None in a hub), and the write guard."""

    def __init__(self, meter: MeterControl | None, feed: Feed, guard: Guard, fleet: Fleet,
                 primary: str, version: str = ""):
        self.local, self.feed, self.guard = meter, feed, guard
        self.fleet, self.primary, self.version = fleet, primary, version
        self.closing = asyncio.Event()
        self.faults: Any = None  # the meter's fault switch (web/faults_api.py), if any

    @property
    def meter(self) -> MeterControl:
        """The local meter, for writes and its event log."""
        if self.local is None:
            raise HTTPException(404, "this server shows a hub's meters: it has no local meter to "
                                "write to (configure meters with `pm4324 set`)")
        return self.local

    def snapshot(self, device: str | None = None) -> Snapshot:
        if device is None or device == self.primary:
            snap = self.feed.snapshot or (self.local.snapshot if self.local else None)
        else:
            member = self.fleet.get(device)
            if member is None:
                raise HTTPException(404, f"no meter {device!r} here (see /api/fleet)")
            snap = member.snapshot
        if snap is None:
            raise HTTPException(503, "the meter has no measured second yet")
        return snap


def error_handlers(app: FastAPI) -> None:
    """Every error is JSON: {"error": reason phrase, "reason": what was wrong}."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        from http import HTTPStatus

        body = {"error": HTTPStatus(exc.status_code).phrase, "reason": str(exc.detail)}
        if isinstance(exc, _SettingsRefused):
            body["key"] = exc.key
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # every method of the path, not only the first route's
            headers["Allow"] = ", ".join(sorted(_methods(app, request)))
        return JSONResponse(body, exc.status_code, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return JSONResponse({"error": "Unprocessable Content",
                             "reason": f"{where}: {first.get('msg', 'invalid request')}"}, 422)


def _methods(app: FastAPI, request: Request) -> set[str]:
    from starlette.routing import Match

    found: set[str] = set()
    for route in app.routes:  # a path match with another method is PARTIAL, not NONE
        methods = getattr(route, "methods", None)
        if methods and route.matches(request.scope)[0] is not Match.NONE:
            found |= set(methods) - {"HEAD"}
    return found


def _saved(done: Future | None) -> None:
    """An HTTP 200 means saved: wait (in the endpoint's worker thread) for the change's
    commit, at most ACK_WAIT_S, else answer 503."""
    if not on_disk(done):
        raise HTTPException(503, "applied but not saved to disk within "
                                 f"{ACK_WAIT_S * 1000:.0f} ms: it may not survive a restart")


class _SettingsRefused(HTTPException):
    def __init__(self, key: str, reason: str):
        super().__init__(422, reason)
        self.key = key


def router(service: Service) -> APIRouter:
    api = APIRouter(prefix="/api", responses=ERRORS)

    def allow(request: Request, authorization: str | None, writes: list[Write]) -> Client:
        meter = service.meter  # 404 in a hub before any credential is looked at
        return authorize(service.guard, meter.settings.security, request, authorization, writes)

    @api.get("/snapshot", summary="The last second, as `pm4324 run --json` prints it (docs/json.md)")
    def snapshot(device: Device = None) -> dict[str, Any]:
        return views.live_view(service.snapshot(device))

    @api.get("/cts", summary="Every CT's values with units")
    def cts(device: Device = None) -> list[CtView]:
        snap = service.snapshot(device)
        return [CtView(**views.ct_view(snap, k)) for k in range(1, 25)]

    @api.get("/cts/{ct}", summary="One CT's values with units")
    def ct(ct: CtNo, device: Device = None) -> CtView:
        return CtView(**views.ct_view(service.snapshot(device), ct))

    @api.get("/cts/{ct}/harmonics", summary="RMS of harmonic orders 1..50 of the CT's V and I")
    def harmonics(ct: CtNo, device: Device = None) -> Harmonics:
        return Harmonics(**views.harmonics_view(service.snapshot(device), ct))

    @api.get("/meters", summary="Every Meter's values with units")
    def meters(device: Device = None) -> list[MeterView]:
        snap = service.snapshot(device)
        return [MeterView(**views.meter_view(snap, m)) for m in range(1, 9)]

    @api.get("/meters/{meter}", summary="One Meter's values with units")
    def meter(meter: MeterNo, device: Device = None) -> MeterView:
        return MeterView(**views.meter_view(service.snapshot(device), meter))

    @api.get("/meters/{meter}/waveforms",
             summary="Samples of the last whole cycles of the Meter's voltages and currents")
    def waveforms(meter: MeterNo, device: Device = None) -> Waveforms:
        return Waveforms(**views.waveform_view(service.snapshot(device), meter))

    @api.get("/mains", summary="Each main's phase and line voltages, THD and frequency")
    def mains(device: Device = None) -> list[MainView]:
        snap = service.snapshot(device)
        return [MainView(**views.main_view(snap, m)) for m in range(1, snap.settings.n_mains + 1)]

    @api.get("/stream", summary="Server-sent events: one `snapshot` event per second",
             response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
    async def stream() -> StreamingResponse:
        return StreamingResponse(_events(service), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    @api.get("/events", summary="The newest events of the meter's log, newest first")
    def events(limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               kind: Annotated[str | None, Query(max_length=40)] = None) -> list[Event]:
        logged = list(getattr(service.local, "events", ()))
        chosen = [e for e in reversed(logged) if kind is None or e.kind == kind][:limit]
        return [Event(**e.to_dict()) for e in chosen]

    @api.get("/alarms", summary="The enabled alarm rules and their state")
    def alarms(device: Device = None) -> list[Alarm]:
        return [Alarm(**a) for a in service.snapshot(device).alarms_dict()["alarms"]]

    @api.post("/alarms/acknowledge", summary="Acknowledge latched alarms (right: relays)")
    def acknowledge(body: AlarmAck, request: Request, authorization: Auth = None) -> list[Alarm]:
        writes = [Write(Right.RELAYS, "alarm acknowledgement", "",
                        f"relay {body.relay}" if body.relay else "both relays")]
        client = allow(request, authorization, writes)
        _saved(service.meter.acknowledge_alarms(body.relay))
        service.guard.accepted(client, writes)
        return [Alarm(**a) for a in _alarm_rows(service)]

    @api.get("/relays", summary="The two relays: closed or open, and who switches them")
    def relays() -> list[Relay]:
        return _relays(service)

    @api.put("/relays/{relay}", summary="Switch a relay in manual mode (right: relays)")
    def set_relay(relay: Annotated[int, Path(ge=1, le=2)], body: RelayWrite, request: Request,
                  authorization: Auth = None) -> Relay:
        state = ("open", "closed")
        writes = [Write(Right.RELAYS, f"relay {relay}", state[service.meter.relays[relay - 1]],
                        state[body.closed])]
        client = allow(request, authorization, writes)
        try:
            done = service.meter.set_relay(relay - 1, body.closed)
        except ValueError as exc:  # the relay is in alarm mode: its rules own it
            raise HTTPException(409, str(exc)) from None
        _saved(done)
        service.guard.accepted(client, writes)
        return _relays(service)[relay - 1]

    @api.post("/energy/reset", summary="Zero energy registers (right: energy-reset); logged")
    def reset_energy(body: EnergyReset, request: Request, authorization: Auth = None) -> list[Event]:
        writes = [Write(Right.ENERGY_RESET, f"energy of Meter {body.meter}" if body.meter
                        else "energy of every Meter", "", "0")]
        client = allow(request, authorization, writes)
        _saved(service.meter.reset_energy(body.meter))
        service.guard.accepted(client, writes)
        logged = [e for e in getattr(service.meter, "events", ()) if e.kind == "energy_reset"]
        return [Event(**e.to_dict()) for e in logged[-1:]]

    @api.get("/settings", summary="The running settings")
    def settings(device: Device = None) -> SettingsView:
        if device is None and service.local is not None:
            return _settings_view(service.local.settings)
        return _settings_view(service.snapshot(device).settings)

    @api.patch("/settings", summary="Change settings (right: settings), validated like the file")
    def change_settings(body: SettingsWrite, request: Request, authorization: Auth = None) -> SettingsView:
        writes = [Write(Right.SETTINGS, key, "", str(value)) for key, value in body.changes.items()]
        client = allow(request, authorization, writes)
        new = changed_settings(service.meter.settings, body.changes)
        try:
            done = service.meter.apply_settings(new)
        except SettingsConflict as exc:  # the operator changed the file on disk meanwhile
            raise HTTPException(409, str(exc)) from None
        except SettingsError as exc:
            raise _SettingsRefused(exc.key, f"{exc.key} = {exc.value!r}: {exc.allowed}") from None
        except ValueError as exc:
            raise _SettingsRefused("", str(exc)) from None
        _saved(done)
        service.guard.accepted(client, writes)
        return _settings_view(service.meter.settings)

    @api.get("/fleet", summary="The meters this server shows: online, last seen, model")
    def fleet() -> list[FleetMember]:
        return [FleetMember(key=m.key, online=m.online, last_seen=m.last_seen,
                            seq=None if m.snapshot is None else m.snapshot.seq,
                            model=None if m.snapshot is None else m.snapshot.settings.model)
                for m in service.fleet.members()]

    @api.get("/registers", summary="The Modbus register map (as docs/registers.json)")
    def registers() -> dict[str, Any]:
        import json

        from pm4324.registers.docs import render_json
        from pm4324.registers.table import load_map

        return json.loads(render_json(load_map()))

    return api


def metrics_route(app: FastAPI, service: Service) -> None:
    cache: dict[str, Any] = {"seq": None, "text": ""}

    @app.get("/metrics", summary="Prometheus text format 0.0.4", response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    def prometheus() -> Response:
        members = service.fleet.members()
        key = tuple(None if m.snapshot is None else m.snapshot.seq for m in members)
        if cache["seq"] != key or None in key:  # once per second of every meter
            cache["seq"], cache["text"] = key, metrics.render(
                [(m.key, m.snapshot) for m in members], service.version)
        return Response(cache["text"], media_type=metrics.CONTENT_TYPE)


async def _events(service: Service) -> AsyncIterator[bytes]:
    yield b"retry: 2000\n\n"  # a browser that lost the stream asks again after 2 s
    sent = None
    while not service.closing.is_set():
        snap, data = service.feed.snapshot, service.feed.live_json()
        if data is not None and snap is not None and snap.seq != sent:
            sent = snap.seq
            yield b"id: %d\nevent: snapshot\ndata: %s\n\n" % (snap.seq, data)
        elif not await service.feed.next(STREAM_KEEPALIVE_S):
            yield b": keep-alive\n\n"


def _alarm_rows(service: Service) -> list[dict[str, Any]]:
    s, status = service.meter.settings, service.meter.alarm_status
    rows = []
    for k, rule in enumerate(s.alarms):
        if rule.enabled and k < len(status.active):
            rows.append({"alarm": k + 1, "relay": rule.relay, "rule": rule.describe(),
                         "active": status.active[k], "unacked": status.unacked[k],
                         "value": views.number(status.values[k])})
    return rows


def _relays(service: Service) -> list[Relay]:
    modes = [r.mode for r in service.meter.settings.relays.relays]
    return [Relay(relay=k + 1, closed=c, mode=modes[k]) for k, c in enumerate(service.meter.relays)]


def _settings_view(s: Settings) -> SettingsView:
    text = settings_to_toml(s)
    return SettingsView(toml=text, values=tomllib.loads(text))


def changed_settings(current: Settings, changes: dict[str, Any]) -> Settings:
    """The current settings with dotted keys changed, through the settings file's parser.

    A number after a list names its item from 1 (``meters.3.circuit_phases.2``, ``alarms.1.relay``).
    """
    data: dict[str, Any] = tomllib.loads(settings_to_toml(current))
    for key, value in changes.items():
        parts = key.split(".")
        target: Any = data
        try:
            for part in parts[:-1]:
                target = target[_item(part)] if isinstance(target, list) else target.setdefault(part, {})
            last = parts[-1]
            if isinstance(target, list):
                target[_item(last)] = value
            elif isinstance(target, dict) and last:
                target[last] = value
            else:
                raise KeyError(key)
        except (KeyError, IndexError, ValueError, TypeError, AttributeError):
            raise _SettingsRefused(key, f"{key}: no such setting") from None
    try:
        return parse_settings(data, "settings change")
    except SettingsError as exc:
        raise _SettingsRefused(exc.key, f"{exc.key} = {exc.value!r}: {exc.allowed}") from None
    except (TypeError, ValueError) as exc:
        raise _SettingsRefused("", str(exc)) from None


def _item(part: str) -> int:
    """List item ``part`` (1-based) as an index; ValueError for 0 or a non-number."""
    if not part.isdigit() or int(part) < 1:
        raise ValueError(part)
    return int(part) - 1
