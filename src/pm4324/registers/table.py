"""The register table: ``map.csv`` loaded into frozen rows and checked before anything serves it.

``map.csv`` is the single source of truth for every Modbus point (one row per point). This
module only reads and validates it, so a correction to an address, type, scale or evidence tag
is a CSV edit and needs no code change. Loading fails loudly (``TableError`` naming the file,
line, column and value) on anything a server could get wrong later: unknown tables, types,
sources or units, bad ranges, duplicate names and overlapping addresses.

The ``source`` column names what a point serves, in a small closed vocabulary::

    ct.v_rms[24]  meter.p_w[8]  main.v_ln[2][3]  ct_energy.wh_import[5]  snapshot.seq
    setting:meters.3.ct_ratio  setting:mains.1.pt_ratio  setting:modbus.word_order  setting:model
    setting:relays.1.mode  setting:alarms.4.threshold  alarm:active  alarm:unacked
    relay:1  command:energy_reset  command:alarm_ack  const:firmware_bcd  const:reserved

Measured fields are exactly the fields of the snapshot's dataclasses (minus the harmonic
spectra, which the map does not serve) plus ``lead_lag``, derived from the signs of P and Q.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path

from pm4324.config.alarm_settings import MAX_ALARMS
from pm4324.config.settings import N_CTS, N_METERS
from pm4324.registers.codecs import INT_RANGES, REGISTER_TYPES
from pm4324.snapshot import ENERGY_KINDS, CtValues, MainValues, MeterValues

COLUMNS = (
    "name", "table", "address", "type", "unit", "scale", "min", "max",
    "access", "source", "evidence", "description",
)
TABLES = ("coil", "discrete", "input", "holding")
BIT_TABLES = ("coil", "discrete")
EVIDENCE = {
    "M": "stated in a PM-4324 / PM-4324A vendor manual page",
    "P": "stated in the ICP DAS PMC/PMD concentrator manual",
    "S": "stated in a sibling ICP DAS meter manual (PM-3133i)",
    "D": "reconstructed from partial PM-4324 manual text; provisional",
    "ours": "designed by this project; not evidenced for the real device",
}
EVIDENCED = frozenset({"M", "P", "S", "D"})
HARMONIC_FIELDS = frozenset({"v_harmonics", "i_harmonics", "v_harmonic_phasors",
                             "i_harmonic_phasors"})

#: native unit of every measured field (the snapshot's own units)
FIELD_UNITS = {
    "v_rms": "V", "i_rms": "A", "p_w": "W", "q_var": "var", "s_va": "VA",
    "s_arith_va": "VA", "s_vector_va": "VA", "pf": "PF", "thd_v_pct": "%", "thd_i_pct": "%",
    "frequency_hz": "Hz", "flags": "", "lead_lag": "", "v_ln": "V", "v_ll": "V",
    "wh_import": "Wh", "wh_export": "Wh", "varh_q1": "varh", "varh_q2": "varh",
    "varh_q3": "varh", "varh_q4": "varh", "varh_import": "varh", "varh_export": "varh",
    "vah": "VAh",
}
_ENERGY_FIELDS = (*ENERGY_KINDS, "varh_import", "varh_export")


def _value_fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.name not in HARMONIC_FIELDS)


#: measured groups: fields served, how many instances (1-based index), fields with a phase index
MEASURED: dict[str, tuple[tuple[str, ...], int]] = {
    "ct": ((*_value_fields(CtValues), "lead_lag"), N_CTS),
    "meter": ((*_value_fields(MeterValues), "lead_lag"), N_METERS),
    "main": (_value_fields(MainValues), 2),
    "ct_energy": (_ENERGY_FIELDS, N_CTS),
    "meter_energy": (_ENERGY_FIELDS, N_METERS),
}
PHASED_MAIN_FIELDS = frozenset({"v_ln", "v_ll", "thd_v_pct"})
SNAPSHOT_FIELDS = {"seq": "", "time": "s", "duration_s": "s", "status": ""}
#: settings a point may serve: (group, field) -> (native unit, writable over Modbus)
SETTINGS = {
    ("meters", "ct_ratio"): ("", True),
    ("meters", "wiring"): ("", True),
    ("mains", "pt_ratio"): ("", True),
    ("modbus", "word_order"): ("", True),
    ("modbus", "address"): ("", False),
    ("modbus", "baud"): ("baud", False),
    ("modbus", "data_format"): ("", False),
    ("model", ""): ("", False),
    ("ct_input", ""): ("", False),
    **{("relays", f): ("", True) for f in ("mode", "power_up", "combine")},
    **{("alarms", f): ("", True) for f in (
        "relay", "quantity", "target_kind", "target_index", "comparison", "latch",
        "threshold", "band_low", "band_high", "hysteresis")},
    ("alarms", "on_delay_s"): ("s", True),
    ("alarms", "off_delay_s"): ("s", True),
}
#: numbered setting groups and how many there are
NUMBERED = {"meters": N_METERS, "mains": 2, "relays": 2, "alarms": MAX_ALARMS}
CONSTS = ("firmware_bcd", "reserved")
COMMANDS = ("energy_reset", "alarm_ack")
ALARM_STATES = ("active", "unacked")  # alarm:<state> = bit mask over the rule slots
SECURITY_COUNTERS = ("audit_dropped", "writes_refused")  # security:<counter> (security/guard.py)
N_RELAYS = 2
MAX_BITS, MAX_REGISTERS = 2000, 125  # per read request (Modbus spec; ICP DAS template [S])


class TableError(ValueError):
    """The register table is invalid; the message names file, line, column and value."""


@dataclass(frozen=True, slots=True)
class Source:
    """What one point serves (parsed from the ``source`` column)."""

    text: str
    kind: str  # "measured", "snapshot", "setting", "relay", "command", "alarm", "security"
    #            or "const"
    group: str = ""  # ct, meter, main, ct_energy, meter_energy | meters, mains, modbus, model,
    #                  ct_input, relays, alarms
    field: str = ""
    index: int = 0  # 1-based CT / Meter / main / relay number; 0 = none
    phase: int = 0  # 1-based phase of a main's per-phase array; 0 = none
    unit: str = ""  # the native unit of the value

    @property
    def writable(self) -> bool:
        if self.kind == "setting":
            return SETTINGS[(self.group, self.field)][1]
        return self.kind in ("relay", "command")


_MEASURED_RE = re.compile(r"(\w+)\.(\w+)\[(\d+)\](?:\[(\d+)\])?")
_SETTING_RE = re.compile(
    r"(meters|mains|relays|alarms)\.(\d+)\.(\w+)|(modbus)\.(\w+)|(model|ct_input)")


def parse_source(text: str) -> Source:
    """Parse one ``source`` cell; raises ValueError with the reason."""
    kind, _, rest = text.partition(":")
    if not rest:
        return _parse_value(text)
    if kind == "setting" and (m := _SETTING_RE.fullmatch(rest)):
        if m[1]:
            group, index, field = m[1], int(m[2]), m[3]
            count = NUMBERED[group]
            if not 1 <= index <= count:
                raise ValueError(f"{group} are numbered 1 to {count}")
        else:
            group, index, field = (m[4], 0, m[5]) if m[4] else (m[6], 0, "")
        if (group, field) not in SETTINGS:
            raise ValueError("is not a setting the map can serve")
        return Source(text, "setting", group, field, index, unit=SETTINGS[(group, field)][0])
    if kind == "relay" and rest.isdigit() and 1 <= int(rest) <= N_RELAYS:
        return Source(text, "relay", index=int(rest))
    if kind == "command" and rest in COMMANDS:
        return Source(text, "command", field=rest)
    if kind == "const" and rest in CONSTS:
        return Source(text, "const", field=rest)
    if kind == "alarm" and rest in ALARM_STATES:
        return Source(text, "alarm", field=rest)
    if kind == "security" and rest in SECURITY_COUNTERS:
        return Source(text, "security", field=rest)
    raise ValueError("is not a known source")


def _parse_value(text: str) -> Source:
    group, _, field = text.partition(".")
    if group == "snapshot" and field in SNAPSHOT_FIELDS:
        return Source(text, "snapshot", group, field, unit=SNAPSHOT_FIELDS[field])
    m = _MEASURED_RE.fullmatch(text)
    if not m or m[1] not in MEASURED:
        raise ValueError("is not a known source")
    group, field, index = m[1], m[2], int(m[3])
    names, count = MEASURED[group]
    if field not in names:
        raise ValueError(f"{group} has no field {field!r}")
    if not 1 <= index <= count:
        raise ValueError(f"{group} is numbered 1 to {count}")
    phased = group == "main" and field in PHASED_MAIN_FIELDS
    if phased != (m[4] is not None):
        raise ValueError("needs a phase index [1..3]" if phased else "takes no phase index")
    phase = int(m[4] or 0)
    if phased and not 1 <= phase <= 3:
        raise ValueError("phase index must be 1 to 3")
    return Source(text, "measured", group, field, index, phase, FIELD_UNITS[field])


@dataclass(frozen=True, slots=True)
class Point:
    """One register point: raw register number * scale = value in ``unit``."""

    name: str
    table: str
    address: int
    type: str
    unit: str
    scale: float
    minimum: int | None  # raw range accepted by a write (writable register points only)
    maximum: int | None
    access: str
    source: Source
    evidence: str
    description: str
    factor: float  # value in ``unit`` per value in the source's native unit (1 or 1e-3)
    decimals: int  # decimals of ``scale``; physical values are rounded to them

    @property
    def size(self) -> int:
        return 1 if self.type == "bit" else REGISTER_TYPES[self.type]

    @property
    def end(self) -> int:
        return self.address + self.size

    @property
    def writable(self) -> bool:
        return self.access == "RW"

    @property
    def evidenced(self) -> bool:
        return self.evidence in EVIDENCED

    def physical(self, raw: float) -> float:
        """Raw register number -> value in ``unit``."""
        value = raw * self.scale
        return round(value, self.decimals) if self.type != "float32" else value

    def native(self, raw: float) -> float:
        """Raw register number -> value in the source's native unit (W, Wh, V ...)."""
        return self.physical(raw) / self.factor


class RegisterMap:
    """All points, validated; lookups by table and address."""

    def __init__(self, points: list[Point], origin: str = "<points>"):
        self.origin = origin
        self.points = tuple(sorted(points, key=lambda p: (TABLES.index(p.table), p.address)))
        self._at: dict[str, dict[int, Point]] = {t: {} for t in TABLES}
        # every image build asks for these: made once
        self._tables = {t: tuple(p for p in self.points if p.table == t) for t in TABLES}
        self.by_name: dict[str, Point] = {}
        for p in self.points:
            if p.name in self.by_name:
                raise TableError(f"{origin}: name {p.name!r} is used twice")
            self.by_name[p.name] = p
            cells = self._at[p.table]
            for a in range(p.address, p.end):
                if a in cells:
                    raise TableError(
                        f"{origin}: {p.name} ({p.table} 0x{p.address:04X}) overlaps "
                        f"{cells[a].name} at 0x{a:04X}"
                    )
                cells[a] = p

    def table(self, name: str) -> tuple[Point, ...]:
        """The points of one table, by address."""
        return self._tables[name]

    def at(self, table: str, address: int) -> Point | None:
        """The point covering ``address`` (any of its registers), or None if unmapped."""
        return self._at[table].get(address)

    def addresses(self, table: str) -> frozenset[int]:
        return frozenset(self._at[table])


# ---------------------------------------------------------------------------------------------
# Loading


def _unit_factor(unit: str, native: str) -> float:
    if unit == native:
        return 1.0
    if native and unit == "k" + native:
        return 1e-3
    raise ValueError(f"must be {native!r}" + (f" or {'k' + native!r}" if native else ""))


def _row_point(row: dict[str, str]) -> Point:
    """Build one point; raises ValueError("column: reason")."""

    def fail(column: str, why: str) -> ValueError:
        return ValueError(f"{column} = {row[column]!r}: {why}")

    table = row["table"]
    if table not in TABLES:
        raise fail("table", f"must be one of {', '.join(TABLES)}")
    if not re.fullmatch(r"0x[0-9A-F]{4}", row["address"]):
        raise fail("address", "must be 0x followed by 4 upper-case hex digits")
    address = int(row["address"], 16)
    type_ = row["type"]
    allowed = ("bit",) if table in BIT_TABLES else tuple(REGISTER_TYPES)
    if type_ not in allowed:
        raise fail("type", f"a {table} point must be {', '.join(allowed)}")
    if address + (1 if type_ == "bit" else REGISTER_TYPES[type_]) > 0x10000:
        raise fail("address", "the point runs past 0xFFFF")
    try:
        source = parse_source(row["source"])
    except ValueError as exc:
        raise fail("source", str(exc)) from None
    try:
        factor = _unit_factor(row["unit"], source.unit)
    except ValueError as exc:
        raise fail("unit", f"{exc} for source {source.text}") from None
    try:
        scale = float(row["scale"])
        decimals = max(0, -int(Decimal(row["scale"]).normalize().as_tuple().exponent))
    except (ArithmeticError, ValueError):
        raise fail("scale", "must be a number") from None
    if not scale > 0 or (type_ in ("bit", "float32") and scale != 1):
        raise fail("scale", "must be 1 for bits and floats, and positive")
    access = row["access"]
    if access not in ("R", "RW") or (access == "RW" and table in ("input", "discrete")):
        raise fail("access", f"must be R{' or RW' if table in ('coil', 'holding') else ''}")
    if access == "RW" and not source.writable:
        raise fail("access", f"{source.text} cannot be written")
    if source.kind == "relay" and table != "coil" or source.kind == "command" and access != "RW":
        raise fail("source", "relays are RW coils and commands RW holding registers")
    minimum, maximum = _range(row, fail, access == "RW" and type_ != "bit", type_)
    if row["evidence"] not in EVIDENCE:
        raise fail("evidence", f"must be one of {', '.join(EVIDENCE)}")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", row["name"]):
        raise fail("name", "must be lower-case letters, digits and _")
    if not row["description"].strip():
        raise fail("description", "must not be empty")
    return Point(
        row["name"], table, address, type_, row["unit"], scale, minimum, maximum, access,
        source, row["evidence"], row["description"], factor, decimals,
    )


def _range(
    row: dict[str, str], fail: Callable[[str, str], ValueError], needed: bool, type_: str
) -> tuple[int | None, int | None]:
    if not needed:
        if row["min"] or row["max"]:
            raise fail("min", "only writable registers have a range")
        return None, None
    lo_t, hi_t = INT_RANGES.get(type_, (-(2**31), 2**31 - 1))
    try:
        lo, hi = int(row["min"]), int(row["max"])
    except ValueError:
        raise fail("min", "a writable register needs whole-number min and max") from None
    if not lo_t <= lo <= hi <= hi_t:
        raise fail("max", f"needs {lo_t} <= min <= max <= {hi_t}")
    return lo, hi


def parse_map(text: str, origin: str = "<csv>") -> RegisterMap:
    """Parse and validate CSV text (header row = ``COLUMNS``)."""
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise TableError(f"{origin}: header must be {','.join(COLUMNS)}")
    points = []
    for row in reader:
        if None in row or any(v is None for v in row.values()):
            raise TableError(f"{origin}:{reader.line_num}: needs exactly {len(COLUMNS)} cells")
        try:
            points.append(_row_point(row))
        except ValueError as exc:
            raise TableError(f"{origin}:{reader.line_num}: {row['name']}: {exc}") from None
    return RegisterMap(points, origin)


def map_text() -> str:
    """The committed ``map.csv`` shipped inside the package."""
    return resources.files("pm4324.registers").joinpath("map.csv").read_text(encoding="utf-8")


def load_map(path: str | Path | None = None) -> RegisterMap:
    """Load a register table; None = the package's own ``map.csv`` (cached)."""
    if path is None:
        return _default_map()
    p = Path(path)
    return parse_map(p.read_text(encoding="utf-8"), str(p))


@cache
def _default_map() -> RegisterMap:
    return parse_map(map_text(), "pm4324/registers/map.csv")
