"""Blobs of the history: float arrays, byte-shuffled and deflated.

Shuffling puts the k-th byte of every float together (the sign/exponent bytes of a slowly
varying series are nearly constant), which lets zlib compress measured series 2-10x where
plain deflate of the floats gains little; see docs/history.md for measured sizes.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_HEAD = struct.Struct("<BBHI")  # dtype code, ndim, reserved, first dimension (second follows)
_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("<f8"), 2: np.dtype("<i4")}
_CODES = {v: k for k, v in _DTYPES.items()}


def pack(a: np.ndarray, level: int = 6) -> bytes:
    """A 1-D or 2-D float32/float64/int32 array -> shuffled, deflated bytes."""
    a = np.ascontiguousarray(a)
    dtype = a.dtype.newbyteorder("<")
    code = _CODES[dtype]
    shape = a.shape if a.ndim == 2 else (a.shape[0], 1)
    shuffled = a.astype(dtype).view(np.uint8).reshape(-1, dtype.itemsize).T.tobytes()
    head = _HEAD.pack(code, a.ndim, 0, shape[0]) + struct.pack("<I", shape[1])
    return head + zlib.compress(shuffled, level)


def unpack(blob: bytes) -> np.ndarray:
    code, ndim, _, rows = _HEAD.unpack_from(blob)
    (cols,) = struct.unpack_from("<I", blob, _HEAD.size)
    dtype = _DTYPES[code]
    data = np.frombuffer(zlib.decompress(blob[_HEAD.size + 4:]), dtype=np.uint8)
    a = data.reshape(dtype.itemsize, -1).T.copy().view(dtype).reshape(rows, cols)
    return a if ndim == 2 else a[:, 0]
