"""The object dictionary as data: frozen entries, each carrying its data type and codec.

An ``Entry`` is one sub-index (a VAR is an object with the single entry sub 0). It states
what the entry is (type, access, PDO mappability, limits, unit) and where its value comes
from (``kind``): a row of the register table (``point``), the evidenced INTEGER32 kW/kWh
pair, a communication parameter kept by the node, or a constant. Values never live here:
the node reads them from the current register image or from its communication state.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from pm4324.protocols.canopen.codes import Abort, SdoAbort
from pm4324.registers.table import Point, Source


class DataType(IntEnum):
    """CiA 301 static data types used here (the EDS ``DataType`` numbers)."""

    BOOLEAN = 0x0001
    INTEGER8 = 0x0002
    INTEGER16 = 0x0003
    INTEGER32 = 0x0004
    UNSIGNED8 = 0x0005
    UNSIGNED16 = 0x0006
    UNSIGNED32 = 0x0007
    REAL32 = 0x0008
    VISIBLE_STRING = 0x0009


STRUCTS = {
    DataType.BOOLEAN: struct.Struct("<B"),
    DataType.INTEGER8: struct.Struct("<b"),
    DataType.INTEGER16: struct.Struct("<h"),
    DataType.INTEGER32: struct.Struct("<i"),
    DataType.UNSIGNED8: struct.Struct("<B"),
    DataType.UNSIGNED16: struct.Struct("<H"),
    DataType.UNSIGNED32: struct.Struct("<I"),
    DataType.REAL32: struct.Struct("<f"),
}
INT_RANGES = {
    DataType.BOOLEAN: (0, 1),
    DataType.INTEGER8: (-(2**7), 2**7 - 1),
    DataType.INTEGER16: (-(2**15), 2**15 - 1),
    DataType.INTEGER32: (-(2**31), 2**31 - 1),
    DataType.UNSIGNED8: (0, 2**8 - 1),
    DataType.UNSIGNED16: (0, 2**16 - 1),
    DataType.UNSIGNED32: (0, 2**32 - 1),
}
#: register-table type -> CANopen data type (the raw number is carried unchanged)
FROM_REGISTER_TYPE = {
    "float32": DataType.REAL32,
    "uint32": DataType.UNSIGNED32,
    "int32": DataType.INTEGER32,
    "uint16": DataType.UNSIGNED16,
    "int16": DataType.INTEGER16,
    "bcd": DataType.UNSIGNED16,
    "bit": DataType.UNSIGNED8,
}

VAR, ARRAY, RECORD = 0x7, 0x8, 0x9
READABLE = frozenset({"ro", "rw", "const"})
WRITABLE = frozenset({"rw", "wo"})


def size_of(data_type: DataType) -> int | None:
    """Bytes of a fixed-size type; None for strings."""
    s = STRUCTS.get(data_type)
    return s.size if s else None


def encode(data_type: DataType, value: Any) -> bytes:
    """A value as CiA 301 little-endian bytes (strings as ASCII)."""
    if data_type is DataType.VISIBLE_STRING:
        return str(value).encode("ascii", "replace")
    if data_type is DataType.REAL32:
        try:
            return STRUCTS[data_type].pack(float(value))
        except OverflowError:
            return STRUCTS[data_type].pack(math.copysign(math.inf, float(value)))
    return STRUCTS[data_type].pack(int(value))


def decode(data_type: DataType, data: bytes) -> Any:
    """Bytes of exactly the type's size -> value (strings: ASCII text)."""
    if data_type is DataType.VISIBLE_STRING:
        return bytes(data).decode("ascii", "replace")
    return STRUCTS[data_type].unpack(bytes(data))[0]


@dataclass(frozen=True, slots=True)
class Entry:
    """One sub-index of the object dictionary."""

    index: int
    sub: int
    name: str
    data_type: DataType
    access: str  # "ro", "rw", "wo" or "const"
    kind: str  # "point", "kw", "kwh", "comm", "const", "canopen"
    pdo: bool = False  # may be mapped into a PDO
    default: int | float | str | None = None
    node_relative: bool = False  # the default is $NODEID + default
    low: int | None = None  # value range a write must respect (integers)
    high: int | None = None
    unit: str = ""
    factor: float | None = None  # value in ``unit`` = raw * factor
    description: str = ""
    point: Point | None = None  # the register-table row whose raw number this entry carries
    source: Source | None = None  # for kw/kwh: the snapshot quantity

    @property
    def readable(self) -> bool:
        return self.access in READABLE

    @property
    def writable(self) -> bool:
        return self.access in WRITABLE

    @property
    def size(self) -> int | None:
        return size_of(self.data_type)

    @property
    def bits(self) -> int:
        return 8 * (self.size or 0)

    def mapping_value(self) -> int:
        """This entry's CiA PDO mapping value: index(16) | sub-index(8) | length in bits(8)."""
        return self.index << 16 | self.sub << 8 | self.bits

    def check_range(self, value: int | float) -> None:
        """Raise the value-range abort for an integer outside ``low``..``high``."""
        if self.low is not None and value < self.low:
            raise SdoAbort(Abort.VALUE_LOW, f"{self.name} = {value}: below {self.low}")
        if self.high is not None and value > self.high:
            raise SdoAbort(Abort.VALUE_HIGH, f"{self.name} = {value}: above {self.high}")


@dataclass(frozen=True, slots=True)
class Obj:
    """One object: a VAR (entry sub 0), or an ARRAY/RECORD whose sub 0 is its highest sub."""

    index: int
    name: str
    object_type: int
    entries: tuple[Entry, ...]
    description: str = ""
    _by_sub: dict[int, Entry] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_sub.update({e.sub: e for e in self.entries})

    def get(self, sub: int) -> Entry | None:
        return self._by_sub.get(sub)


class Dictionary:
    """All objects by index, plus lookups by register-table point."""

    def __init__(self, objects: list[Obj], aliases: dict[Point, Entry] | None = None):
        self.objects: dict[int, Obj] = {o.index: o for o in sorted(objects, key=lambda o: o.index)}
        if len(self.objects) != len(objects):
            raise ValueError("two objects share an index")
        self.by_point: dict[Point, Entry] = {}
        self.by_source: dict[tuple[str, str], Entry] = {}  # (kind, source text) for kw/kwh
        for obj in self.objects.values():
            for e in obj.entries:
                if e.point is not None:
                    self.by_point[e.point] = e
                if e.source is not None and e.kind in ("kw", "kwh"):
                    self.by_source[(e.kind, e.source.text)] = e
        self.by_point.update(aliases or {})

    def __iter__(self):
        return iter(self.objects.values())

    def __contains__(self, index: int) -> bool:
        return index in self.objects

    def entry(self, index: int, sub: int) -> Entry:
        """The entry at index/sub, or the abort a master gets for a missing one."""
        obj = self.objects.get(index)
        if obj is None:
            raise SdoAbort(Abort.NO_OBJECT, f"0x{index:04X} does not exist")
        e = obj.get(sub)
        if e is None:
            raise SdoAbort(Abort.NO_SUB, f"0x{index:04X}:{sub} does not exist")
        return e

    def entries(self):
        for obj in self.objects.values():
            yield from obj.entries
