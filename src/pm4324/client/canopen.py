"""`pm4324 read --canopen`: read a PM-4324-CPS over CANopen SDO, as `read` does over Modbus.

The master is python-canopen's ``RemoteNode`` with the object dictionary our EDS describes
(built in memory from the same register table). Each register-table row that `read` would
fetch over Modbus is uploaded from the CANopen entry that carries its raw number, and the
same decoder (``client.modbus.snapshot_dict``) turns the raw numbers into the keys of
``Snapshot.to_dict()``. A real PM-4324-CPS lacks our 0x2000.. objects: an aborted upload
leaves its keys None, and P and the import energy then come from the evidenced 0x3200 (W)
and 0x3201 (0.01 kWh) objects.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import struct
from collections.abc import Iterator, Sequence
from typing import Any

from pm4324.client.modbus import ReadError, snapshot_dict, wanted_points
from pm4324.config.settings import N_METERS
from pm4324.protocols.canopen.eds import render_eds
from pm4324.protocols.canopen.objects import DataType, Entry
from pm4324.protocols.canopen.od import build_dictionary
from pm4324.protocols.canopen.values import NO_DATA
from pm4324.registers.table import Point, RegisterMap, load_map

log = logging.getLogger(__name__)

_FORMATS = {DataType.REAL32: "<f", DataType.UNSIGNED32: "<I", DataType.INTEGER32: "<i",
            DataType.UNSIGNED16: "<H", DataType.INTEGER16: "<h", DataType.UNSIGNED8: "<B",
            DataType.INTEGER8: "<b", DataType.BOOLEAN: "<B"}


def parse_canopen(text: str) -> tuple[str, str]:
    """``INTERFACE:CHANNEL`` (e.g. ``socketcan:can0``, ``udp_multicast:239.74.163.2``)."""
    interface, sep, channel = text.partition(":")
    if not sep or not interface or not channel:
        raise ValueError(f"{text!r}: expected INTERFACE:CHANNEL, e.g. socketcan:can0")
    return interface, channel


def _object_dictionary(node: int, register_map: RegisterMap):
    from canopen.objectdictionary.eds import import_eds

    return import_eds(io.StringIO(render_eds(build_dictionary(register_map))), node)


def _raw(entry: Entry, data: bytes) -> int | float | None:
    fmt = _FORMATS.get(entry.data_type)
    if fmt is None or len(data) != struct.calcsize(fmt):
        return None
    return struct.unpack(fmt, data)[0]


@contextlib.contextmanager
def remote_node(interface: str, channel: str, node: int, *, timeout: float = 1.0,
                bitrate: int | None = None, register_map: RegisterMap | None = None
                ) -> Iterator[tuple[Any, Any]]:
    """A python-canopen ``RemoteNode`` with our EDS, and our dictionary (entries by point),
    on an open bus; ReadError when the bus cannot be opened or the node does not answer."""
    import can
    import canopen
    from canopen.sdo.exceptions import SdoAbortedError, SdoCommunicationError

    rm = register_map or load_map()
    network = canopen.Network()
    network.NOTIFIER_CYCLE = 0.1  # the receive thread stops within 0.1 s at disconnect
    try:
        network.connect(interface=interface, channel=channel,
                        **({"bitrate": bitrate} if bitrate else {}))
    except (can.CanError, OSError, ValueError, ImportError) as exc:
        raise ReadError(f"{interface}:{channel}: cannot open the bus: {exc}") from None
    try:
        remote = network.add_node(node, _object_dictionary(node, rm))
        remote.sdo.RESPONSE_TIMEOUT = timeout
        try:
            remote.sdo.upload(0x1008, 0)
        except SdoAbortedError:
            pass
        except SdoCommunicationError:
            raise ReadError(f"{interface}:{channel}: node {node} does not answer") from None
        yield remote, build_dictionary(rm)
    finally:
        network.disconnect()


def read_canopen(interface: str, channel: str, node: int, meters: Sequence[int] | None = None,
                 *, timeout: float = 1.0, bitrate: int | None = None,
                 register_map: RegisterMap | None = None) -> dict[str, Any]:
    """Read one node; the keys of ``Snapshot.to_dict(meters)`` (None where no object answered).

    Raises ``ReadError`` when the bus cannot be opened or the node does not answer at all.
    """
    from canopen.sdo.exceptions import SdoAbortedError, SdoCommunicationError

    rm = register_map or load_map()
    chosen = list(meters or range(1, N_METERS + 1))
    with remote_node(interface, channel, node, timeout=timeout, bitrate=bitrate,
                     register_map=rm) as (remote, d):

        def upload(entry: Entry) -> int | float | None:
            try:
                return _raw(entry, remote.sdo.upload(entry.index, entry.sub))
            except SdoAbortedError:
                return None

        try:
            raw = _read_points(upload, d.by_point, wanted_points(rm, chosen))
            result = snapshot_dict(raw, chosen)
            _fill_from_evidenced(result, upload, d)
        except SdoCommunicationError as exc:
            raise ReadError(f"{interface}:{channel}: node {node} stopped answering: {exc}") from None
        return result


def _read_points(upload, by_point: dict[Point, Entry], points: list[Point]) -> dict[Point, Any]:
    cache: dict[Entry, Any] = {}
    raw: dict[Point, Any] = {}
    for p in points:
        entry = by_point.get(p)
        if entry is None:
            raw[p] = None
            continue
        if entry not in cache:
            cache[entry] = upload(entry)
        value = cache[entry]
        raw[p] = bool(value) if p.type == "bit" and value is not None else value
    return raw


def _fill_from_evidenced(result: dict[str, Any], upload, d) -> None:
    """P and import energy from 0x3200/0x3201 where our own objects did not answer."""
    for key, number in (("cts", "ct"), ("meters", "meter")):
        for item in result[key]:
            n = item[number]
            group = "ct" if number == "ct" else "meter"
            if item.get("p_w") is None:
                entry = d.by_source.get(("kw", f"{group}.p_w[{n}]"))
                value = upload(entry) if entry else None
                if value is not None and value != NO_DATA:
                    item["p_w"] = float(value)
            if item.get("kwh_import") is None:
                entry = d.by_source.get(("kwh", f"{group}_energy.wh_import[{n}]"))
                value = upload(entry) if entry else None
                if value is not None and value != NO_DATA and math.isfinite(value):
                    item["kwh_import"] = round(value * 0.01, 2)
