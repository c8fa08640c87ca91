"""The fleet's interfaces: Modbus TCP (a port per meter, or gateway ports with 247 unit ids
each), Modbus RTU multi-drop on one serial line, CANopen nodes on one bus, and the HTTP and
MQTT interfaces (docs/fleet.md).

Every member is served by the same servers as a single meter (protocols/): only the
backend differs (fleet/member.py). A member's register backend is made when it is first
asked for, so 10,000 members cost nothing until a master reads them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pm4324.fleet.config import GATEWAY_UNITS, FleetConfig
from pm4324.fleet.member import FleetMember, MemberBackend
from pm4324.protocols.faults import ProtocolFaults
from pm4324.registers.table import load_map
from pm4324.security.guard import Guard

CAN_NODES = 127


class ExposeError(Exception):
    """An interface could not start (one sentence for the user)."""


class ListenFailed(ExposeError):
    """A TCP port could not be listened on (the command says why in its words)."""

    def __init__(self, host: str, port: int, error: OSError):
        super().__init__(f"cannot listen on {host}:{port}: {error.strerror or error}")
        self.host, self.port, self.error = host, port, error


class SerialFailed(ExposeError):
    """The serial line could not be opened."""

    def __init__(self, device: str, error: BaseException, line: str):
        super().__init__(f"cannot open {device}: {error}")
        self.device, self.error, self.line = device, error, line


class LazyBackend:
    """A member's ``MemberBackend``, made when a server first uses it."""

    def __init__(self, make: Callable[[], MemberBackend]):
        self._make = make
        self._backend: MemberBackend | None = None

    @property
    def backend(self) -> MemberBackend:
        if self._backend is None:
            self._backend = self._make()
        return self._backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def for_client(self, client: Any, word_order: str | None = None) -> _LazySession:
        return _LazySession(self, client, word_order)


class _LazySession:
    """A client's session of a lazy backend: the backend is made at the first request."""

    def __init__(self, lazy: LazyBackend, client: Any, word_order: str | None):
        self._args = (lazy, client, word_order)
        self._session: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._session is None:
            lazy, client, order = self._args
            self._session = lazy.backend.for_client(client, order)
        return getattr(self._session, name)


class Backends:
    """One (lazy) register backend per member, sharing the register map."""

    def __init__(self, members: list[FleetMember]):
        self.map = load_map()
        self.members = members
        self._guards: dict[int, Guard] = {}
        self.lazy = [LazyBackend(lambda m=m: self._make(m)) for m in members]

    def _make(self, member: FleetMember) -> MemberBackend:
        sec = member.settings.security
        guard = self._guards.setdefault(id(sec), Guard(sec))
        return MemberBackend(member, self.map, guard)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def start_tcp(config: FleetConfig, backends: Backends, servers: list,
                    faults: list[ProtocolFaults] | None = None) -> None:
    """One port per member, or (gateway) one port per 247 members behind unit ids 1..247;
    ``faults``: each member's protocol faults (by place in the fleet)."""
    from pm4324.protocols.modbus.tcp import TcpServer

    t = config.tcp
    if t.mode == "off":
        return
    n = len(backends.lazy)
    if t.mode == "gateway":
        for first in range(0, n, GATEWAY_UNITS):
            units = {u + 1: backends.lazy[first + u] for u in range(min(GATEWAY_UNITS, n - first))}
            port = config.tcp_place(first)[0] if t.port else 0
            wire = {u: faults[first + u - 1] for u in units} if faults else None
            await _start(TcpServer(None, backends=units, host=t.host, port=port, faults=wire),
                         servers, t.host, port)
        first_port = servers[len(servers) - -(-n // GATEWAY_UNITS)].port
        _say(f"Modbus TCP gateway: {n} meters behind unit ids 1..{min(n, GATEWAY_UNITS)} on "
             f"{t.host}:{first_port}..{servers[-1].port}")
        return
    for j, lazy in enumerate(backends.lazy):
        port = config.tcp_place(j)[0] if t.port else 0  # 0: free ports (tests)
        wire = faults[j] if faults else None
        await _start(TcpServer(lazy, unit_id=1, host=t.host, port=port, faults=wire), servers,
                     t.host, port)
    _say(f"Modbus TCP: {n} meters on {t.host}:{servers[-n].port}..{servers[-1].port} (unit 1, "
         "one port each)")


async def _start(server: Any, servers: list, host: str, port: int) -> None:
    try:
        await server.start()
    except OSError as exc:
        raise ListenFailed(host, port, exc) from None
    servers.append(server)


async def start_rtu(config: FleetConfig, backends: Backends, servers: list,
                    faults: list[ProtocolFaults] | None = None) -> None:
    """The first 247 members on one RS-485 line, unit id = place in the fleet (1..247)."""
    from pm4324.protocols.modbus.rtu import RtuServer

    r = config.rtu
    if not r.device:
        return
    n = min(len(backends.lazy), GATEWAY_UNITS)
    units = {u + 1: backends.lazy[u] for u in range(n)}
    server = RtuServer(None, r.device, backends=units, baud=r.baud, data_format=r.data_format,
                       faults={u: faults[u - 1] for u in units} if faults else None)
    try:
        await server.start()
    except Exception as exc:  # pyserial wraps the OSError
        await server.stop()
        raise SerialFailed(r.device, exc, f"{r.baud} {r.data_format}") from None
    servers.append(server)
    _say(f"Modbus RTU on {r.device} {r.baud} {r.data_format}: {n} meters at unit ids 1..{n}")


async def start_canopen(config: FleetConfig, members: list[FleetMember], backends: Backends,
                        servers: list, meter_ids: list[str],
                        faults: list[ProtocolFaults] | None = None) -> None:
    """The first 127 members as CANopen nodes 1..127 on one bus; each serial number
    (0x1018:4) is the first 32 bits of the member's meter id, as a single meter's."""
    from pm4324.protocols.canopen import CanopenBusError, CanopenServer

    co = config.canopen
    if not co.interface:
        return
    n = min(len(members), CAN_NODES)
    for j in range(n):
        m = members[j]
        s = m.settings
        s = replace(s, canopen=replace(s.canopen, node_id=j + 1, interface=co.interface,
                                       channel=co.channel, bitrate=co.bitrate))
        serial = int(meter_ids[j].replace("-", "")[:8], 16)
        node = CanopenServer(m, s, backend=backends.lazy[j].backend, serial_number=serial,
                             faults=faults[j] if faults else None)
        try:
            await node.start()
        except CanopenBusError as exc:
            raise ExposeError(str(exc)) from None
        servers.append(node)
    _say(f"CANopen: {n} nodes (node ids 1..{n}) on {co.interface}:{co.channel}")
