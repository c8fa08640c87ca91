"""Register codecs: numbers <-> 16-bit Modbus registers, one place for byte and word order.

Every register is sent high byte first (Modbus big-endian). A 32-bit value (float32, uint32,
int32) spans two registers; ICP DAS meters send the **low word first** by default, so the
big-endian float ``A B C D`` travels as the words ``C D`` then ``A B`` (byte order C D A B).
The ``high-first`` order (``A B C D``) is the vendor's "inverse" sequence, selected here by
``settings.modbus.word_order`` (holding register, see docs/registers.md).

Codecs work on *raw* numbers: scaling, rounding and range policy live in the register image,
so a codec never knows what a register means (the pymodbus ``datastore_update`` lesson).
"""

from __future__ import annotations

import math
import struct

from pm4324.config.settings import WORD_ORDERS

LOW_FIRST, HIGH_FIRST = WORD_ORDERS

#: registers per value, for every register type the table may use
REGISTER_TYPES: dict[str, int] = {
    "uint16": 1,
    "int16": 1,
    "bcd": 1,
    "uint32": 2,
    "int32": 2,
    "float32": 2,
}
#: raw range of each integer type (bcd: four decimal digits)
INT_RANGES: dict[str, tuple[int, int]] = {
    "uint16": (0, 0xFFFF),
    "int16": (-0x8000, 0x7FFF),
    "bcd": (0, 9999),
    "uint32": (0, 0xFFFF_FFFF),
    "int32": (-0x8000_0000, 0x7FFF_FFFF),
}
_STRUCT = {"uint32": ">I", "int32": ">i", "float32": ">f"}


class CodecError(ValueError):
    """A raw value does not fit its register type (a bug in the caller, never a client's fault)."""


def _check_order(word_order: str) -> None:
    if word_order not in WORD_ORDERS:
        raise CodecError(f"word order {word_order!r}: must be one of {', '.join(WORD_ORDERS)}")


def bcd_encode(value: int) -> int:
    """0..9999 -> one register of four BCD digits (100 -> 0x0100, firmware "1.00")."""
    if not 0 <= value <= 9999:
        raise CodecError(f"BCD value {value} is outside 0..9999")
    return int(str(value), 16)


def bcd_decode(register: int) -> int:
    """One BCD register -> 0..9999; a nibble above 9 is not BCD and raises CodecError."""
    text = f"{register & 0xFFFF:04x}"
    if not text.isdigit():
        raise CodecError(f"0x{register:04X} is not BCD")
    return int(text)


def _float_bytes(value: float) -> bytes:
    try:
        return struct.pack(">f", value)
    except OverflowError:  # beyond float32 range: send an infinity of the same sign
        return struct.pack(">f", math.copysign(math.inf, value))


def encode(type_: str, raw: int | float, word_order: str = LOW_FIRST) -> list[int]:
    """Encode one raw value as its registers, in wire order."""
    _check_order(word_order)
    if type_ == "float32":
        data = _float_bytes(float(raw))
    elif type_ in INT_RANGES:
        lo, hi = INT_RANGES[type_]
        if isinstance(raw, float) and not raw.is_integer() or not lo <= raw <= hi:
            raise CodecError(f"{raw!r} does not fit {type_} ({lo}..{hi})")
        raw = int(raw)
        if type_ == "uint16":
            return [raw]
        if type_ == "int16":
            return [raw & 0xFFFF]
        if type_ == "bcd":
            return [bcd_encode(raw)]
        data = struct.pack(_STRUCT[type_], raw)
    else:
        raise CodecError(f"unknown register type {type_!r}")
    high, low = struct.unpack(">HH", data)
    return [low, high] if word_order == LOW_FIRST else [high, low]


def decode(type_: str, registers: list[int], word_order: str = LOW_FIRST) -> int | float:
    """Decode the registers of one value (wire order) into its raw number."""
    _check_order(word_order)
    size = REGISTER_TYPES.get(type_)
    if size is None:
        raise CodecError(f"unknown register type {type_!r}")
    if len(registers) != size:
        raise CodecError(f"{type_} needs {size} register(s), got {len(registers)}")
    if type_ == "uint16":
        return registers[0] & 0xFFFF
    if type_ == "int16":
        return struct.unpack(">h", struct.pack(">H", registers[0] & 0xFFFF))[0]
    if type_ == "bcd":
        return bcd_decode(registers[0])
    first, second = (r & 0xFFFF for r in registers)
    high, low = (second, first) if word_order == LOW_FIRST else (first, second)
    return struct.unpack(_STRUCT[type_], struct.pack(">HH", high, low))[0]
