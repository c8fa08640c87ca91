"""One HTTP server for the API, the dashboard and /metrics, on the meter's own event loop.

uvicorn serves the FastAPI app from a socket we bind ourselves (so a busy port is one clear
line at start-up, and port 0 gives a free port for tests) and without its own signal
handlers (``pm4324 run`` owns Ctrl-C and SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from importlib import metadata, resources

import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from pm4324.history import HistoryStore
from pm4324.registers.backend import MeterControl
from pm4324.security.guard import Guard
from pm4324.snapshot import Snapshot
from pm4324.web.api import Service, error_handlers, metrics_route, router
from pm4324.web.faults_api import FaultControl, fault_router
from pm4324.web.feed import Feed
from pm4324.web.fleet import Fleet
from pm4324.web.history_api import WebHistory, history_router
from pm4324.web.pq_api import pq_router
from pm4324.web.wiring_api import wiring_router

PAGES = {"": "Building", "meter": "Meter", "trends": "Trends", "events": "Events", "settings": "Settings",
         "wiring": "Wiring"}
ASSETS = {"app.css": "text/css", "app.js": "text/javascript", "charts.js": "text/javascript",
          "icon.svg": "image/svg+xml"}


def is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def exposure_warning(host: str) -> str | None:
    """What serving on ``host`` exposes, for stderr (None on loopback)."""
    if is_loopback(host):
        return None
    return (f"  {host} is not loopback: every live value, the settings and the event log can be "
            "read from the network without a credential (plain HTTP: tokens travel in clear; "
            "put a TLS proxy in front, docs/web.md)")


def _version() -> str:
    try:
        return metadata.version("pm4324")
    except metadata.PackageNotFoundError:
        return ""


def create_app(service: Service, history: WebHistory | None = None) -> FastAPI:
    # no /docs or /redoc: their viewers load from a CDN, and every page here works offline
    app = FastAPI(title="pm4324", version=service.version or "0", docs_url=None, redoc_url=None,
                  description="A software PM-4324 power meter: live values, harmonics, waveforms, "
                  "events, relays and settings (docs/web.md).")
    error_handlers(app)
    app.include_router(router(service))
    app.include_router(history_router(service, history or WebHistory(None)))
    app.include_router(fault_router(service.faults, service.guard, service.local))
    app.include_router(wiring_router(service))
    app.include_router(pq_router(service))
    metrics_route(app, service)
    static = resources.files("pm4324.web") / "static"
    shell = (static / "page.html").read_text(encoding="utf-8")
    assets = {name: (static / name).read_bytes() for name in ASSETS}

    def page(slug: str, title: str) -> None:
        html = shell.replace("{{page}}", slug or "building").replace("{{title}}", title)

        @app.get("/" + slug, response_class=HTMLResponse, include_in_schema=False, name=f"page_{slug}")
        def show() -> HTMLResponse:
            return HTMLResponse(html)

    for slug, title in PAGES.items():
        page(slug, title)

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name not in assets:
            from fastapi import HTTPException

            raise HTTPException(404, f"no asset {name!r}")
        return Response(assets[name], media_type=ASSETS[name],
                        headers={"Cache-Control": "max-age=3600"})

    return app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the meter's own handlers stay in place
        yield


class WebServer:
    """Start/stop like the protocol servers; ``port`` is the bound port (0 asks for a free one).

    ``pm4324 run`` passes its meter (shown as "local", and the target of writes); a hub passes
    ``meter=None`` and the keys of its meters, then calls ``publish(key, snapshot)`` for
    each reading and ``fleet.mark(key, online)`` when a meter stops or resumes answering.
    ``history`` is a store opened for this server alone (the writer keeps its own connection);
    the server closes it when it stops.
    """

    def __init__(self, meter: MeterControl | None, host: str = "127.0.0.1", port: int = 8080,
                 guard: Guard | None = None, keys: list[str] | None = None,
                 history: HistoryStore | None = None, faults: FaultControl | None = None):
        self.meter, self.host, self.port = meter, host, port
        self.faults = faults  # the meter's fault switch (`/api/faults`), if it has one
        # the meter's guard decides writes by [security] (no guard given: one without an audit log)
        self.guard = guard or Guard(meter.settings.security if meter is not None else None)
        self.fleet = Fleet(keys or ["local"])
        self._server: _Server | None = None
        self._task: asyncio.Task | None = None
        self.service: Service | None = None
        self.history = WebHistory(history)

    def publish(self, key: str, snap: Snapshot) -> None:
        """A new second of meter ``key`` (any thread)."""
        self.fleet.update(key, snap)
        if key == self.fleet.keys[0] and self.service is not None:
            self.service.feed.publish(snap)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.service = Service(self.meter, Feed(loop), self.guard, self.fleet, self.fleet.keys[0],
                               _version())
        self.service.faults = self.faults
        if self.meter is not None:
            self.meter.add_listener(lambda snap: self.publish(self.fleet.keys[0], snap))
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP named, so asyncio sets TCP_NODELAY on each connection (it checks the
        # socket's proto): else a keep-alive answer's body waited ~40 ms for a delayed ACK
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot serve HTTP on {self.host}:{self.port}: {exc.strerror}") from None
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(create_app(self.service, self.history), log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2, loop="none")
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        for _ in range(500):  # bounded: start-up is a few ms
            if self._server.started or self._task.done():
                break
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()

    def start_in_thread(self) -> None:
        """Serve from an event loop on a thread of its own (a hub polls in plain threads);
        OSError when the address cannot be bound. ``stop_thread()`` ends both."""
        import threading

        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="web", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(30)
        except BaseException:
            self._stop_loop(loop)
            raise
        self._loop = loop

    def stop_thread(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(15)
            self._stop_loop(loop)

    def _stop_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        loop.close()
        self.history.close()

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        if self.service is not None:
            self.service.closing.set()
            self.service.feed.wake()
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, 5)
        self.history.close()
