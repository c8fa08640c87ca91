"""Read a PM-4324 over Modbus TCP or RTU into the keys of ``Snapshot.to_dict()``.

The client decodes registers with the same table the software meter serves (``map.csv``), so
names, units and word order cannot drift. It uses only FC 01 and FC 04, reads at most 125
registers per request and never splits a point. It is meant to work against real PM-4324
hardware for the evidenced registers: if a request that mixes evidenced and [ours] rows is
refused (a real unit lacks our blocks), it retries the evidenced and [ours] runs separately,
and every key it could not read is None. The result has the keys of ``Snapshot.to_dict()``.

CANopen: ``client.canopen``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pm4324.client.plausible import implausible, summary
from pm4324.config.settings import N_METERS, WORD_ORDERS, Wiring
from pm4324.registers.codecs import CodecError, decode
from pm4324.registers.image import MODEL_CODES
from pm4324.registers.table import MAX_BITS, MAX_REGISTERS, Point, RegisterMap, load_map
from pm4324.snapshot import ENERGY_KINDS, Flag, Status

DEFAULT_TCP_PORT = 502  # real -MTCP units; our server's default is 127.0.0.1:5020
READ_TABLES = ("coil", "input")  # everything to_dict needs is in these two tables
MODEL_NAMES = {code: name for name, code in MODEL_CODES.items()}
CT_FIELDS = ("v_rms", "i_rms", "p_w", "q_var", "s_va", "pf", "lead_lag", "thd_v_pct",
             "thd_i_pct", "frequency_hz", "flags")
METER_FIELDS = ("v_rms", "i_rms", "p_w", "q_var", "s_va", "s_arith_va", "s_vector_va", "pf",
                "lead_lag", "frequency_hz", "flags")

#: reads (table, address, count): the values, or None when the device answered an exception
Reader = Callable[[str, int, int], list[Any] | None]


class ReadError(Exception):
    """The device cannot be reached (connection refused, timeout, serial port error)."""


class WordOrderError(ReadError):
    """The values make no sense in the word order asked for, and do in the other one."""


@dataclass(frozen=True)
class Reading:
    """What `pm4324 read` shows: the keys of ``Snapshot.to_dict()``, and the resolution the
    meter gave its energies (kWh: 0.01 from the integer registers, finer from floats)."""

    values: dict[str, Any]
    kwh_resolution: float | None


# -- which registers to read -------------------------------------------------------------------


def _meter_of(p: Point) -> int | None:
    s = p.source
    if s.group in ("ct", "ct_energy"):
        return (s.index - 1) // 3 + 1
    if s.group in ("meter", "meter_energy") or (s.group == "meters" and s.kind == "setting"):
        return s.index
    return None


def wanted_points(register_map: RegisterMap, meters: Sequence[int]) -> list[Point]:
    """The coil and input points of the device, the mains and the chosen Meters.

    A reserved (const) row belongs to the Meter of the row before it, so it is read only
    where it keeps a chosen Meter's block in one piece.
    """
    wanted: list[Point] = []
    owner, prev = None, None
    for p in register_map.points:
        if p.table not in READ_TABLES:
            continue
        if prev is None or prev.table != p.table or prev.end != p.address:
            owner = None  # a new block
        if p.source.kind != "const":
            owner = _meter_of(p)
        if owner is None or owner in meters:
            wanted.append(p)
        prev = p
    return wanted


def plan_chunks(points: Sequence[Point]) -> list[list[Point]]:
    """Consecutive points of one table, at most one request's worth each, never split."""
    chunks: list[list[Point]] = []
    for p in sorted(points, key=lambda p: (p.table, p.address)):
        limit = MAX_BITS if p.table in ("coil", "discrete") else MAX_REGISTERS
        last = chunks[-1] if chunks else None
        if (
            last
            and last[-1].table == p.table
            and last[-1].end == p.address
            and p.end - last[0].address <= limit
        ):
            last.append(p)
        else:
            chunks.append([p])
    return chunks


def _evidence_runs(chunk: list[Point]) -> list[list[Point]]:
    runs: list[list[Point]] = []
    for p in chunk:
        if runs and runs[-1][-1].evidenced == p.evidenced:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def read_points(read: Reader, points: Sequence[Point], word_order: str) -> dict[Point, Any]:
    """Raw values of ``points`` (None where the device refused); raises ReadError."""
    values: dict[Point, Any] = dict.fromkeys(points)
    for chunk in plan_chunks(points):
        words = _read_part(read, chunk)
        if words is not None:
            _store(values, chunk, words, word_order)
            continue
        runs = _evidence_runs(chunk)
        if len(runs) > 1:  # a real unit may lack our rows: try evidenced and [ours] apart
            for part in runs:
                if (words := _read_part(read, part)) is not None:
                    _store(values, part, words, word_order)
    return values


def _store(values: dict[Point, Any], part: list[Point], words: list[Any], order: str) -> None:
    base = part[0].address
    for p in part:
        cells = words[p.address - base : p.end - base]
        try:
            values[p] = bool(cells[0]) if p.type == "bit" else decode(p.type, cells, order)
        except CodecError:  # e.g. a real unit's register that is not BCD where we expect it
            values[p] = None


def _read_part(read: Reader, part: list[Point]) -> list[Any] | None:
    start = part[0].address
    return read(part[0].table, start, part[-1].end - start)


# -- registers -> the JSON form of a snapshot --------------------------------------------------


#: significant digits of an energy in kWh: a float32 copy has at most 9, the integer registers'
#: 0.01 kWh up to 42,949,672.95 need 10 (9 dropped the 0.01 kWh above 10,000,000 kWh)
KWH_DIGITS = 10


def _clean(x: float | None, digits: int = 12) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def _resolution(p: Point, raw: float) -> float:
    """The step between two values this point can give near ``raw`` (physical unit)."""
    if p.type == "float32":
        return float(np.spacing(np.float32(abs(raw)))) * abs(p.scale)
    return abs(p.scale)


class _Values:
    """Native values by source text, from the best point that answered."""

    def __init__(self, raw: dict[Point, Any]):
        self._best: dict[str, tuple[tuple[bool, float], Point, Any]] = {}
        for p, value in raw.items():
            if value is None or p.type == "float32" and not math.isfinite(value):
                continue
            # prefer evidenced rows, then the finer resolution: a float32 energy (1e-7
            # relative) over the 0.01 kWh integer while the counter is below 2^17 kWh
            rank = (not p.evidenced, _resolution(p, value))
            old = self._best.get(p.source.text)
            if old is None or rank < old[0]:
                self._best[p.source.text] = (rank, p, value)

    def energy_resolution(self) -> float | None:
        """The coarsest resolution among the energies read (kWh), None without energies."""
        steps = [rank[1] for source, (rank, p, _) in self._best.items()
                 if "_energy." in source and p.unit.startswith("k")]
        return max(steps) if steps else None

    def get(self, source: str) -> float | None:
        found = self._best.get(source)
        if found is None:
            return None
        _, p, raw = found
        if p.type == "bit":
            return float(raw)
        if p.type == "float32":  # the shortest decimal that is this float32 (no noise digits)
            raw = float(str(np.float32(raw)))
        return _clean(p.native(raw))


def _flags(x: float | None) -> list[str] | None:
    return None if x is None else Flag(int(x)).names()


def _status(x: float | None) -> list[str] | None:
    return None if x is None else Status(int(x)).names()


def _lead_lag(x: float | None) -> str | None:
    return None if x is None else {1.0: "lag", -1.0: "lead"}.get(x, "")


def _element(v: _Values, group: str, index: int, names: Sequence[str]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for name in names:
        x = v.get(f"{group}.{name}[{index}]")
        d[name] = _flags(x) if name == "flags" else _lead_lag(x) if name == "lead_lag" else x
    for kind in ENERGY_KINDS:
        wh = v.get(f"{group}_energy.{kind}[{index}]")
        d["k" + kind] = None if wh is None else _clean(wh / 1000.0, KWH_DIGITS)
    return d


def _wiring(x: float | None) -> str | None:
    if x is None or not x.is_integer() or not 0 <= x < len(Wiring):
        return None
    return Wiring.from_code(int(x)).value


def snapshot_dict(raw: dict[Point, Any], meters: Sequence[int]) -> dict[str, Any]:
    """The keys of ``Snapshot.to_dict(meters)``; None where no register answered."""
    return _snapshot_dict(_Values(raw), meters)


def _snapshot_dict(v: _Values, meters: Sequence[int]) -> dict[str, Any]:
    code = v.get("setting:model")
    model = MODEL_NAMES.get(int(code)) if code is not None else None
    seq = v.get("snapshot.seq")
    n_mains = {"PM-4324": 1, "PM-4324A": 2}.get(model or "", 2)
    mains = []
    for i in range(1, n_mains + 1):
        phases = range(1, 4)
        mains.append({
            "main": i,
            "frequency_hz": v.get(f"main.frequency_hz[{i}]"),
            "v_ln": [v.get(f"main.v_ln[{i}][{j}]") for j in phases],
            "v_ll": [v.get(f"main.v_ll[{i}][{j}]") for j in phases],
            "thd_v_pct": [v.get(f"main.thd_v_pct[{i}][{j}]") for j in phases],
            "flags": _flags(v.get(f"main.flags[{i}]")),
        })
    cts = [3 * (m - 1) + k for m in meters for k in (1, 2, 3)]
    relays = [v.get(f"relay:{k}") for k in (1, 2)]
    return {
        "seq": None if seq is None else int(seq),
        "time": v.get("snapshot.time"),
        "model": model,
        "duration_s": v.get("snapshot.duration_s"),
        "status": _status(v.get("snapshot.status")),
        "relays": [None if r is None else bool(r) for r in relays],
        "mains": mains,
        "cts": [{"ct": k, "name": None, **_element(v, "ct", k, CT_FIELDS)} for k in cts],
        "meters": [
            {
                "meter": m,
                "name": None,  # labels live in the settings file, not in registers
                "wiring": _wiring(v.get(f"setting:meters.{m}.wiring")),
                **_element(v, "meter", m, METER_FIELDS),
            }
            for m in meters
        ],
    }


def read_meter(
    read: Reader,
    meters: Sequence[int] | None = None,
    word_order: str = WORD_ORDERS[0],
    register_map: RegisterMap | None = None,
) -> dict[str, Any] | None:
    """Read and decode; None when the device refused every request."""
    reading = read_reading(read, meters, word_order, register_map)
    return None if reading is None else reading.values


def read_reading(
    read: Reader,
    meters: Sequence[int] | None = None,
    word_order: str = WORD_ORDERS[0],
    register_map: RegisterMap | None = None,
) -> Reading | None:
    """Read and decode; None when the device refused every request. Raises WordOrderError
    when the values are implausible in ``word_order`` and plausible in the other one."""
    chosen = list(meters or range(1, N_METERS + 1))
    points = wanted_points(register_map or load_map(), chosen)
    answers: dict[tuple[str, int, int], list[Any] | None] = {}

    def remembered(table: str, address: int, count: int) -> list[Any] | None:
        key = (table, address, count)  # decoding twice must not read twice
        if key not in answers:
            answers[key] = read(table, address, count)
        return answers[key]

    raw = read_points(remembered, points, word_order)
    if all(value is None for value in raw.values()):
        return None
    values = _Values(raw)
    d = _snapshot_dict(values, chosen)
    wrong = implausible(d)
    if wrong:
        other = WORD_ORDERS[1 - WORD_ORDERS.index(word_order)]
        d_other = snapshot_dict(read_points(remembered, points, other), chosen)
        if not implausible(d_other):
            raise WordOrderError(
                f"with --word-order {word_order} the meter's values make no sense "
                f"({'; '.join(wrong)}); with {other} they do ({summary(d_other)}): the meter "
                f"seems to use {other}, so give --word-order {other}")
    return Reading(d, values.energy_resolution())


# -- the Modbus client -------------------------------------------------------------------------


def parse_host_port(text: str, default_port: int = DEFAULT_TCP_PORT) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[IPv6]:PORT`` or a bare IPv6 address."""
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if not host or port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{text!r}: expected HOST or HOST:PORT")
    return host, int(port) if port else default_port


def modbus_reader(client: Any, unit: int, where: str) -> Reader:
    """A ``Reader`` over a connected pymodbus client (FC 01 / 02 / 03 / 04)."""
    from pymodbus.exceptions import ModbusException

    calls = {
        "coil": client.read_coils,
        "discrete": client.read_discrete_inputs,
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
    }

    def read(table: str, address: int, count: int) -> list[Any] | None:
        try:
            rsp = calls[table](address, count=count, device_id=unit)
        except ModbusException:  # timeout after the retry, or the connection dropped
            raise ReadError(f"{where}: no answer from unit {unit}") from None
        if rsp.isError():
            return None
        return list(rsp.bits[:count]) if table in ("coil", "discrete") else list(rsp.registers)

    return read
