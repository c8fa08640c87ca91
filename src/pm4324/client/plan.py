"""A read plan: the requests a snapshot needs, computed once, and their answers decoded in one go.

``client.modbus.read_meter`` decodes point by point (struct, a dict per point) — about 6 ms
of CPU per reading, which caps a hub at ~150 meters per core before any networking. A plan
is made once per (register table, Meters): the fewest requests (at most 125 registers or
2000 bits, never splitting a point, never crossing an unmapped address, which a device
refuses) that cover every point the snapshot uses, and index arrays into the answers. A
reading is then decoded with numpy (words -> raw numbers -> native values -> the best point
per quantity) and gives exactly the dict ``read_meter`` gives for the same registers
(tests/client/test_plan.py checks that on random register images). A request a device refuses
is split into its evidenced and [ours] runs (``Request.parts``) like ``read_meter`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pm4324.client.modbus import (
    CT_FIELDS,
    KWH_DIGITS,
    METER_FIELDS,
    MODEL_NAMES,
    READ_TABLES,
    Reader,
    WordOrderError,
    _wiring,
    wanted_points,
)
from pm4324.client.plausible import implausible, summary
from pm4324.config.settings import N_METERS, WORD_ORDERS
from pm4324.registers.table import MAX_BITS, MAX_REGISTERS, Point, RegisterMap, load_map
from pm4324.snapshot import ENERGY_KINDS, Flag, Status

#: the sources ``_snapshot_dict`` asks for (those that are not measured values)
_EXTRA = ("setting:model", "snapshot.seq", "snapshot.time", "snapshot.duration_s",
          "snapshot.status", "relay:1", "relay:2")
_POW10 = 10.0 ** np.arange(23)  # exact in float64


@dataclass(frozen=True)
class Request:
    """One read request; ``parts`` are tried instead when the device refuses it."""

    table: str
    address: int
    count: int
    parts: tuple[Request, ...] = ()

    @property
    def key(self) -> tuple[str, int, int]:
        return self.table, self.address, self.count


def _needed(p: Point, meters: Sequence[int]) -> bool:
    s = p.source
    if s.text in _EXTRA:
        return True
    if s.kind == "setting":
        return s.group == "meters" and s.field == "wiring" and s.index in meters
    return s.kind == "measured"  # wanted_points already dropped the other Meters


def _requests(points: list[Point], needed: set[Point]) -> list[Request]:
    """Greedy over each contiguous run of mapped points: optimal for covering intervals."""
    out: list[Request] = []
    run: list[Point] = []

    def close() -> None:
        while run and run[-1] not in needed:
            run.pop()
        if run:
            out.append(_request(run))
        run.clear()

    for p in points:
        limit = MAX_BITS if p.table == "coil" else MAX_REGISTERS
        contiguous = run and run[-1].table == p.table and run[-1].end == p.address
        if contiguous and p.end - run[0].address <= limit:
            run.append(p)
            continue
        close()
        if p in needed:
            run.append(p)
    close()
    return out


def _request(run: list[Point]) -> Request:
    start, count = run[0].address, run[-1].end - run[0].address
    parts: list[list[Point]] = []
    for p in run:
        if parts and parts[-1][-1].evidenced == p.evidenced:
            parts[-1].append(p)
        else:
            parts.append([p])
    subs = tuple(Request(r[0].table, r[0].address, r[-1].end - r[0].address) for r in parts)
    return Request(run[0].table, start, count, subs if len(subs) > 1 else ())


class ReadPlan:
    """What to ask a meter for, and how to turn the answers into ``Snapshot.to_dict()`` keys."""

    def __init__(self, meters: Sequence[int] | None = None, register_map: RegisterMap | None = None):
        self.meters = tuple(meters or range(1, N_METERS + 1))
        points = [p for p in wanted_points(register_map or load_map(), self.meters)
                  if p.table in READ_TABLES]
        needed = {p for p in points if _needed(p, self.meters)}
        self.requests = _requests(points, needed)
        self.points = [p for p in points if p in needed]
        self._index(self.points)

    def _index(self, points: list[Point]) -> None:
        words = {}  # (table, address) -> position in the flat word (or bit) buffer
        n = {"coil": 0, "input": 0}
        for r in self.requests:
            for sub in (r, *r.parts):
                for a in range(sub.address, sub.address + sub.count):
                    if (r.table, a) not in words:
                        words[(r.table, a)] = n[r.table]
                        n[r.table] += 1
        self.n_bits, self.n_words = n["coil"], n["input"]
        self._slot_of = {(t, a): i for (t, a), i in words.items()}
        types = np.array([p.type for p in points])
        self._pos = np.array([words[(p.table, p.address)] for p in points])
        self._is = {t: types == t for t in ("bit", "uint16", "int16", "bcd", "uint32", "int32",
                                             "float32")}
        self._scale = np.array([p.scale / p.factor for p in points])
        self._evid_bad = np.array([not p.evidenced for p in points], dtype=np.int8)
        self._factor = np.array([p.factor for p in points])
        self._step = np.array([abs(p.scale) for p in points])
        #: values _clean (12 digits) can change: scaled integers, and floats in kW, kWh ...
        self._rounded = np.array([p.type != "bit" and (p.scale != 1 or p.factor != 1)
                                  for p in points])
        # candidates per source text, in point order (ties keep the first, as _Values does)
        texts: dict[str, list[int]] = {}
        for i, p in enumerate(points):
            texts.setdefault(p.source.text, []).append(i)
        self.sources = list(texts)
        width = max(len(c) for c in texts.values())
        self._cand = np.full((len(texts), width), len(points))  # len(points) = "no candidate"
        for j, c in enumerate(texts.values()):
            self._cand[j, : len(c)] = c
        self._layout()

    def buffers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Empty (words, words answered, bits, bits answered) for one reading."""
        return (np.zeros(self.n_words, np.uint16), np.zeros(self.n_words, bool),
                np.zeros(self.n_bits, bool), np.zeros(self.n_bits, bool))

    def decode_answers(self, answers: Mapping[tuple[str, int, int], Sequence[Any] | None],
                       word_order: str = WORD_ORDERS[0]) -> dict[str, Any] | None:
        """Decode ``answers`` (by ``Request.key``: registers or bits, None = refused)."""
        buf = self.buffers()
        for r in self.requests:
            for sub in (r, *r.parts):
                got = answers.get(sub.key)
                if got is not None:
                    self._store(buf, sub, got)
        return self.decode(*buf, word_order)

    def put(self, buf: tuple[np.ndarray, ...], sub: Request, payload: bytes) -> None:
        """Store one answer's data bytes (registers big-endian, or packed coils)."""
        words, wok, bits, bok = buf
        at = self._slot_of[(sub.table, sub.address)]
        if sub.table == "coil":
            got = np.unpackbits(np.frombuffer(payload, np.uint8), bitorder="little")[: sub.count]
            bits[at: at + sub.count], bok[at: at + sub.count] = got, True
        else:
            words[at: at + sub.count] = np.frombuffer(payload, ">u2", sub.count)
            wok[at: at + sub.count] = True

    def decode(self, words: np.ndarray, wok: np.ndarray, bits: np.ndarray, bok: np.ndarray,
               word_order: str = WORD_ORDERS[0]) -> dict[str, Any] | None:
        """The ``Snapshot.to_dict()`` keys; None when nothing was answered."""
        values = self.values(words, wok, bits, bok, word_order)
        return None if values is None else self._assemble(values)

    def _layout(self) -> None:
        """Where each key of the dict comes from (an index into the values; -1 = nowhere)."""
        at = {t: j for j, t in enumerate(self.sources)}

        def ix(*texts: str) -> list[int]:
            return [at.get(t, -1) for t in texts]

        self._head = ix("snapshot.seq", "snapshot.time", "setting:model", "snapshot.duration_s",
                        "snapshot.status", "relay:1", "relay:2")
        self._mains = [ix(f"main.frequency_hz[{i}]", f"main.flags[{i}]",
                          *(f"main.{q}[{i}][{j}]" for q in ("v_ln", "v_ll", "thd_v_pct")
                            for j in (1, 2, 3))) for i in (1, 2)]
        self._cts = [3 * (m - 1) + k for m in self.meters for k in (1, 2, 3)]
        elements = [("ct", k, CT_FIELDS) for k in self._cts] + [
            ("meter", m, METER_FIELDS) for m in self.meters]
        self._fields = [ix(*(f"{g}.{q}[{n}]" for q in names)) for g, n, names in elements]
        self._energy = np.array([ix(*(f"{g}_energy.{kind}[{n}]" for kind in ENERGY_KINDS))
                                 for g, n, _ in elements]).ravel()
        self._wirings = ix(*(f"setting:meters.{m}.wiring" for m in self.meters))

    def _assemble(self, v: np.ndarray) -> dict[str, Any]:
        """The dict ``client.modbus._snapshot_dict`` builds, from indexed values."""
        ext = np.append(v, np.nan)
        kwh = _none(_snap(ext[self._energy] / 1000.0, KWH_DIGITS).tolist())
        seq, t, code, duration, status, r1, r2 = _none(ext[self._head].tolist())
        model = MODEL_NAMES.get(int(code)) if code is not None else None
        mains = []
        for i, idx in enumerate(self._mains[: {"PM-4324": 1}.get(model or "", 2)], start=1):
            f, flags, *ph = _none(ext[idx].tolist())
            mains.append({"main": i, "frequency_hz": f, "v_ln": ph[0:3], "v_ll": ph[3:6],
                          "thd_v_pct": ph[6:9], "flags": _flag_names(flags)})
        n = len(ENERGY_KINDS)
        elements = []
        for e, idx in enumerate(self._fields):
            d = dict(zip(CT_FIELDS if e < len(self._cts) else METER_FIELDS,
                         _none(ext[idx].tolist()), strict=True))
            d["flags"] = _flag_names(d["flags"])
            d["lead_lag"] = None if d["lead_lag"] is None else _LEAD_LAG.get(d["lead_lag"], "")
            d.update(zip(_KWH_KEYS, kwh[e * n: e * n + n], strict=True))
            elements.append(d)
        k = len(self._cts)
        wirings = _none(ext[self._wirings].tolist())
        return {
            "seq": None if seq is None else int(seq),
            "time": t,
            "model": model,
            "duration_s": duration,
            "status": None if status is None else Status(int(status)).names(),
            "relays": [None if r is None else bool(r) for r in (r1, r2)],
            "mains": mains,
            "cts": [{"ct": c, "name": None, **d} for c, d in zip(self._cts, elements[:k], strict=True)],
            "meters": [{"meter": m, "name": None, "wiring": _wiring(w), **d}
                       for m, w, d in zip(self.meters, wirings, elements[k:], strict=True)],
        }

    def finish(self, buf: tuple[np.ndarray, ...], word_order: str) -> dict[str, Any] | None:
        """Decode a filled ``buffers()``; None when nothing was answered. Raises
        WordOrderError like ``read_reading`` when only the other word order makes sense."""
        d = self.decode(*buf, word_order)
        if d is None or not (wrong := implausible(d)):
            return d
        other = WORD_ORDERS[1 - WORD_ORDERS.index(word_order)]
        d_other = self.decode(*buf, other)
        if d_other is not None and not implausible(d_other):
            raise WordOrderError(
                f"with word order {word_order} the meter's values make no sense "
                f"({'; '.join(wrong)}); with {other} they do ({summary(d_other)})")
        return d

    def read(self, read: Reader, word_order: str = WORD_ORDERS[0]) -> dict[str, Any] | None:
        """Read and decode through a synchronous ``Reader`` (an RTU line: one at a time)."""
        buf = self.buffers()
        for r in self.requests:
            if (got := read(*r.key)) is not None:
                self._store(buf, r, got)
                continue
            for sub in r.parts:  # refused: a real unit may lack our rows
                if (got := read(*sub.key)) is not None:
                    self._store(buf, sub, got)
        return self.finish(buf, word_order)

    def _store(self, buf: tuple[np.ndarray, ...], sub: Request, got: Sequence[Any]) -> None:
        words, wok, bits, bok = buf
        at = self._slot_of[(sub.table, sub.address)]
        if sub.table == "coil":
            bits[at: at + sub.count], bok[at: at + sub.count] = got[: sub.count], True
        else:
            words[at: at + sub.count], wok[at: at + sub.count] = got, True

    def values(self, words: np.ndarray, wok: np.ndarray, bits: np.ndarray, bok: np.ndarray,
               word_order: str) -> np.ndarray | None:
        """Native value per source (NaN = none), or None when no point was answered."""
        pos, is_ = self._pos, self._is
        n = len(pos)
        raw, ok = np.zeros(n), np.zeros(n, bool)
        b = is_["bit"]
        raw[b], ok[b] = bits[pos[b]], bok[pos[b]]
        if not ok.any() and not wok[pos[~b]].any():
            return None
        w = words.astype(np.uint32)
        one = is_["uint16"] | is_["int16"] | is_["bcd"]
        raw[one], ok[one] = w[pos[one]], wok[pos[one]]
        two = is_["uint32"] | is_["int32"] | is_["float32"]
        p2 = pos[two]
        lo, hi = (p2, p2 + 1) if word_order == WORD_ORDERS[0] else (p2 + 1, p2)
        u32 = np.zeros(n, np.uint32)
        u32[two] = (w[hi] << 16) | w[lo]
        ok[two] = wok[lo] & wok[hi]
        raw[is_["uint32"]] = u32[is_["uint32"]]
        raw[is_["int32"]] = u32[is_["int32"]].view(np.int32)
        raw[is_["int16"]] = raw[is_["int16"]].astype(np.uint16).view(np.int16)
        if is_["bcd"].any():
            nib = (w[pos[is_["bcd"]], None] >> np.array([12, 8, 4, 0])) & 0xF
            raw[is_["bcd"]] = nib @ np.array([1000, 100, 10, 1])
            ok[is_["bcd"]] &= (nib <= 9).all(axis=1)
        f = is_["float32"]
        f32 = u32[f].view(np.float32)
        ok[f] &= np.isfinite(f32)
        # rank as _Values: evidenced first, then the finer resolution (float32: its spacing)
        res = self._step.copy()
        res[f] = np.where(ok[f], np.spacing(np.abs(np.where(ok[f], f32, 0))), np.inf)
        native = raw * self._scale  # bits, and integers with scale 1, are already exact
        native[f] = shortest_float32(np.where(ok[f], f32, 0)) / self._factor[f]
        native[self._rounded] = _snap(native[self._rounded])
        key1 = np.append(np.where(ok, self._evid_bad, 2), 3)[self._cand]
        best = key1.min(axis=1, keepdims=True)
        key2 = np.where(key1 == best, np.append(res, np.inf)[self._cand], np.inf)
        choice = self._cand[np.arange(len(self._cand)), key2.argmin(axis=1)]
        out = np.append(native, np.nan)[choice]
        out[best[:, 0] >= 2] = np.nan
        return out


_LEAD_LAG = {1.0: "lag", -1.0: "lead"}
_KWH_KEYS = tuple("k" + kind for kind in ENERGY_KINDS)
_FLAGS: dict[float, list[str]] = {}


def _none(values: list[float]) -> list[float | None]:
    return [None if x != x else x for x in values]


def _flag_names(x: float | None) -> list[str] | None:
    if x is None:
        return None
    if x not in _FLAGS:
        _FLAGS[x] = Flag(int(x)).names()
    return list(_FLAGS[x])


def _snap(x: np.ndarray, digits: int = 12) -> np.ndarray:
    """``float(f"{v:.{digits}g}")`` for every v, vectorised: scaled to ``digits`` digits, the
    nearest integer is the rounding unless the value sits at a tie (then Python decides)."""
    x = np.asarray(x, np.float64)
    out = x.copy()
    fin = np.isfinite(x) & (x != 0)
    e = _exponent(np.where(fin, np.abs(x), 1.0))
    k = digits - 1 - e
    good = fin & (np.abs(k) <= 22)
    scaled = _times_pow10(x, k, good)
    m = np.rint(scaled)
    good &= (np.abs(np.abs(scaled - m) - 0.5) > 1e-6) & (np.abs(m) < 2.0 ** 53)
    out[good] = _div_pow10(m, k, good)[good]
    for i in np.flatnonzero(fin & ~good):
        out[i] = float(f"{x[i]:.{digits}g}")
    return out


def _exponent(a: np.ndarray) -> np.ndarray:
    """floor(log10(a)) exactly for a > 0 (log10 may be off by one next to a power of ten)."""
    e = np.floor(np.log10(a)).astype(np.int64)
    ec = np.clip(e, -300, 300)
    e = np.where(10.0 ** ec.astype(float) > a, e - 1, e)
    ec = np.clip(e + 1, -300, 300)
    return np.where(10.0 ** ec.astype(float) <= a, e + 1, e)


def _times_pow10(x: np.ndarray, k: np.ndarray, mask: np.ndarray) -> np.ndarray:
    kk = np.clip(np.abs(k), 0, 22)
    p = _POW10[kk]
    return np.where(mask, np.where(k >= 0, x * p, x / p), 0.0)


def _div_pow10(m: np.ndarray, k: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """m * 10^-k, correctly rounded (m and 10^|k| are exact, so one rounding)."""
    kk = np.clip(np.abs(k), 0, 22)
    p = _POW10[kk]
    return np.where(mask, np.where(k >= 0, m / p, m * p), 0.0)


def shortest_float32(f: np.ndarray) -> np.ndarray:
    """``float(str(np.float32(v)))`` for every v, vectorised: the shortest decimal that reads
    back as the same float32 (Dragon4 "unique"), as a float64.

    ``astype(str)`` does the same in C but costs ~2 us a value, the largest part of a
    reading. Here a binary search per value finds the fewest digits whose nearest decimal
    reads back (more digits never stop reading back); cases where the exact answer hinges on
    a tie, on the lopsided interval of a power of two or on double rounding (float64, then
    float32) go through ``str`` (rare: tests check random and edge values).
    """
    f = np.asarray(f, np.float32)
    x = f.astype(np.float64)
    out = x.copy()  # zeros (with their sign) stay as they are
    todo = np.isfinite(x) & (x != 0)
    slow = todo & ((np.abs(np.frexp(x)[0]) == 0.5) | (np.abs(x) < 1e-12) | (np.abs(x) > 1e21))
    idx = np.flatnonzero(todo & ~slow)
    xs, fs = x[idx], f[idx]
    e = _exponent(np.abs(xs))
    half_ulp = np.spacing(np.abs(fs)).astype(np.float64) / 2
    every = np.ones(len(idx), bool)

    def nearest(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = d - 1 - e
        scaled = _times_pow10(xs, k, every)
        m = np.rint(scaled)
        c = _div_pow10(m, k, every)
        risky = (np.abs(np.abs(scaled - m) - 0.5) < 1e-6) | (
            np.abs(np.abs(c - xs) - half_ulp) <= half_ulp * 1e-6)
        return c, risky

    lo, hi = np.ones(len(idx), np.int64), np.full(len(idx), 10)  # 9 digits always read back
    while (lo < hi).any():
        mid = (lo + hi) // 2
        back = nearest(mid)[0].astype(np.float32) == fs
        hi, lo = np.where(back, mid, hi), np.where(back, lo, mid + 1)
    c, risky = nearest(lo)
    risky |= nearest(np.maximum(lo - 1, 1))[1] & (lo > 1)  # was one digit fewer a close call?
    out[idx] = c
    slow[idx[risky]] = True
    for i in np.flatnonzero(slow):
        out[i] = float(str(f[i]))
    return out
