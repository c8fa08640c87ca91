"""Blobs of the history: float arrays, byte-shuffled and deflated.

Shuffling puts the k-th byte of every float together (the sign/exponent bytes of a slowly
varying series are nearly constant), which lets zlib compress measured series 2-10x where
plain deflate of the floats gains little; see docs/history.md for measured sizes.

The kept-for-ten-years measurement series (1-minute blocks, 15-minute aggregates) use the
*short-float* form (dtype code 3, ``pack(..., short=True)``): each float32 rounded to 16
mantissa bits (relative error at most 2^-17 = 7.6 ppm, far inside any meter's accuracy)
and stored as the 25-bit integer of sign, exponent and those bits, shuffled and deflated.
A real meter's noise fills the low mantissa bits of a float32 with random bits that deflate
cannot shrink; dropping 7 of them makes a noisy year's store about 28 % smaller (coding the
differences between neighbours was measured too: larger, on noisy data). Energies and
counters never use it (they stay exact). The dtype code in each blob's head says how to
read it, so stores written before the short form read as they always did.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_HEAD = struct.Struct("<BBHI")  # dtype code, ndim, reserved, first dimension (second follows)
_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("<f8"), 2: np.dtype("<i4")}
_CODES = {v: k for k, v in _DTYPES.items()}
SHORT = 3  # float32 rounded to 16 mantissa bits (see above)
_DROP = 7  # float32 mantissa bits dropped by the short form (23 - 16)
#: the short form's bound on |stored - x| / |x| for normal floats
SHORT_RELATIVE_ERROR = 2.0 ** -(23 - _DROP + 1)


def pack(a: np.ndarray, level: int = 6, short: bool = False) -> bytes:
    """A 1-D or 2-D float32/float64/int32 array -> shuffled, deflated bytes. ``short``: a
    float array as float32 rounded to 16 mantissa bits (lossy: ``SHORT_RELATIVE_ERROR``)."""
    a = np.ascontiguousarray(a)
    shape = a.shape if a.ndim == 2 else (a.shape[0], 1)
    if short:
        code, data = SHORT, _short(a.astype("<f4"))
    else:
        dtype = a.dtype.newbyteorder("<")
        code, data = _CODES[dtype], a.astype(dtype)
    shuffled = data.view(np.uint8).reshape(-1, data.dtype.itemsize).T.tobytes()
    head = _HEAD.pack(code, a.ndim, 0, shape[0]) + struct.pack("<I", shape[1])
    return head + zlib.compress(shuffled, level)


def unpack(blob: bytes) -> np.ndarray:
    code, ndim, _, rows = _HEAD.unpack_from(blob)
    (cols,) = struct.unpack_from("<I", blob, _HEAD.size)
    dtype = np.dtype("<u4") if code == SHORT else _DTYPES[code]
    data = np.frombuffer(zlib.decompress(blob[_HEAD.size + 4:]), dtype=np.uint8)
    a = data.reshape(dtype.itemsize, -1).T.copy().view(dtype).reshape(rows, cols)
    if code == SHORT:
        a = _unshort(a)
    return a if ndim == 2 else a[:, 0]


def shorten(a: np.ndarray) -> np.ndarray:
    """What the short form stores for ``a``: float32 rounded (half to even) to 16 mantissa
    bits; NaN and infinities stay, a value that would round past float32's range is cut."""
    bits = np.ascontiguousarray(a, "<f4").view("<u4").astype(np.uint64)
    half = (1 << (_DROP - 1)) - 1 + ((bits >> _DROP) & 1)
    rounded = (bits + half) >> _DROP << _DROP
    finite = (bits & 0x7F800000) != 0x7F800000
    overflow = finite & ((rounded & 0x7F800000) == 0x7F800000)
    keep = ~finite | overflow  # NaN/inf unchanged; the largest floats truncate instead
    rounded = np.where(keep, bits >> _DROP << _DROP, rounded)
    return rounded.astype("<u4").view("<f4").reshape(np.shape(a))


def _short(a: np.ndarray) -> np.ndarray:
    return shorten(a).view("<u4") >> _DROP


def _unshort(v: np.ndarray) -> np.ndarray:
    return (v << _DROP).view("<f4")
