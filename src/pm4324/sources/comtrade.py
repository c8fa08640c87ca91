"""COMTRADE reader (IEEE C37.111-1991/1999/2013): CFG+DAT pairs and single-file CFF.

The tricky parts of the format, and what we do with them:

* Revision: line 1 carries a third field (1999, 2013; 2001 is a common misnomer read as
  1999) or none (1991). 1991 writes dates mm/dd/yy, later revisions dd/mm/yyyy. Analogue
  lines have 10 fields in 1991 and 13 later (adding primary, secondary, P/S).
* Values: value = a * raw + b, ``a`` often negative. The P/S flag says whether that value is
  primary or secondary; we always return primary (secondary * primary / secondary factor).
* Missing samples become NaN: a blank ASCII field (any revision) or 99999 (1999+); BINARY
  0xFFFF (1991) or 0x8000 (1999+); BINARY32 0x80000000; FLOAT32 0xFFFFFFFF (itself a NaN).
* Time: ``nrates > 0`` gives rate sections (samp, endsamp), sample n lying 1/samp after
  sample n-1 of its section; the DAT timestamps are then only informative. ``nrates = 0``
  (or samp = 0) makes the timestamps critical: t = timestamp * timemult * base, base 1 us,
  or 1 ns when a 2013 CFG writes its dates with nine fraction digits. Several rates or
  irregular timestamps are put on a regular grid (``Recording.resampled``). Per-channel
  skew (sub-sample) is ignored.
* 2013 adds the time_code,local_code line ("-5h30": the recorder's offset from UTC, which
  becomes the start time's zone) and tmq_code,leapsec (a start time may be second 60).
* Files: ASCII DATs may end with a DOS end-of-file byte (0x1A); lines end in CRLF or LF;
  suffixes in any letter case. Binary records are little-endian: uint32 sample number,
  uint32 timestamp, analogue values (int16/int32/float32), uint16 status words (16 channels
  each, least significant bit first).
* CFF: one file with sections "--- file type: CFG ---", INF, HDR, then
  "--- file type: DAT ASCII ---" or "--- file type: DAT BINARY: <bytes> ---".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from pm4324.sources.recording import (
    Recording,
    RecordingError,
    find_sibling,
    hold,
    parse_table,
    read_bytes,
    regularise,
    split_lines,
)

REVISIONS = {"1991": "1991", "1999": "1999", "2001": "1999", "2013": "2013"}
BINARY_TYPES = {"BINARY": "<i2", "BINARY32": "<i4", "FLOAT32": "<f4"}
FILE_TYPES = ("ASCII", *BINARY_TYPES)
_TS_MISSING = 0xFFFFFFFF
#: raw analogue values (n_analog, n), status bits (n_digital, n), DAT timestamps (n) or None
_Parsed = tuple[np.ndarray, np.ndarray, np.ndarray | None]
_CFF_HEADER = re.compile(
    rb"^---\s*file type:\s*([a-z]+)(?:\s+([a-z0-9]+))?(?:\s*:\s*(\d+))?\s*---[ \t]*\r?$",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class _Analog:
    name: str
    unit: str
    a: float
    b: float
    to_primary: float  # 1 for P channels, primary/secondary for S channels


@dataclass(frozen=True)
class _Config:
    rev: str
    analog: tuple[_Analog, ...]
    digital: tuple[str, ...]
    line_frequency_hz: float | None
    rates: tuple[tuple[float, int], ...]  # (samp, endsamp); samp 0 = use timestamps
    n_samples: int
    start_time: datetime | None
    timestamp_s: float  # seconds per DAT timestamp unit (base * timemult)
    file_type: str


class _Lines:
    """CFG lines as comma-separated fields, with line numbers for error messages."""

    def __init__(self, name: str, lines: list[str], line0: int = 0):
        self.name, self.lines, self.line0, self.i = name, lines, line0, 0

    def error(self, msg: str) -> RecordingError:
        return RecordingError(f"{self.name} line {self.line0 + self.i}: {msg}")

    def next(self, what: str, optional: bool = False) -> list[str] | None:
        if self.i >= len(self.lines):
            if optional:
                return None
            raise RecordingError(
                f"{self.name}: configuration ends after line {self.line0 + self.i};"
                f" expected {what} on the next line"
            )
        self.i += 1
        return [f.strip() for f in self.lines[self.i - 1].split(",")]

    def fields(self, what: str, lo: int, hi: int) -> list[str]:
        f = self.next(what)
        if not lo <= len(f) <= hi:
            count = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise self.error(f"{what}: expected {count} comma-separated fields, found {len(f)}")
        return f

    def number(self, text: str, what: str, default: float | None = None) -> float:
        if not text and default is not None:
            return default
        try:
            value = float(text)
        except ValueError:
            raise self.error(f"{what} {text!r} is not a number") from None
        if not np.isfinite(value):
            raise self.error(f"{what} {text!r} is not a finite number")
        return value

    def integer(self, text: str, what: str, lo: int = 0) -> int:
        if not (text.isascii() and text.isdigit()) or int(text) < lo:
            raise self.error(f"{what} {text!r} is not a whole number >= {lo}")
        return int(text)


def _count(r: _Lines, text: str, letter: str, what: str) -> int:
    if not text.upper().endswith(letter):
        raise r.error(f"{what} count {text!r} must end in {letter!r}, e.g. '4{letter}'")
    return r.integer(text[:-1], f"{what} count")


def _date(r: _Lines, f: list[str] | None, rev: str) -> tuple[datetime | None, int]:
    """Start time (None when blank or all zero) and the number of fraction digits."""
    if f is None or not any(f):
        return None, 6
    m_d = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{2,4})", f[0])
    clock = f[1] if len(f) > 1 else ""
    m_t = re.fullmatch(r"(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{0,12}))?", clock)
    if not m_d or not m_t:
        raise r.error(f"date/time {','.join(f)!r} is not 'dd/mm/yyyy,hh:mm:ss.ssssss'")
    day, month, year = (int(x) for x in m_d.groups())
    if rev == "1991":
        day, month = month, day
    if year < 100:
        year += 2000 if year < 69 else 1900
    hour, minute, second = (int(x) for x in m_t.groups()[:3])
    frac = m_t.group(4) or ""
    if day == month == 0:
        return None, len(frac)
    leap = second == 60  # a leap second: count it as the second after :59
    try:
        t = datetime(year, month, day, hour, minute, second - leap)
    except ValueError as exc:
        raise r.error(f"date/time {','.join(f)!r} is not valid: {exc}") from None
    us = int((frac + "000000")[:6]) if frac else 0
    return t + timedelta(seconds=leap, microseconds=us), len(frac)


def _time_code(r: _Lines, text: str) -> timezone | None:
    """A 2013 time code ("-5h30", "+10", "0"); x or blank means not given."""
    if text in ("", "x", "X"):
        return None
    m = re.fullmatch(r"([+-]?)(\d{1,2})(?:h(\d{2}))?", text)
    if not m or int(m.group(2)) > 14 or int(m.group(3) or 0) > 59:
        raise r.error(f"time code {text!r} is not like '-5h30', '+10' or '0'")
    minutes = 60 * int(m.group(2)) + int(m.group(3) or 0)
    return timezone(timedelta(minutes=-minutes if m.group(1) == "-" else minutes))


def _parse_cfg(r: _Lines) -> _Config:
    head = r.fields("station name, recording device id, revision year", 2, 3)
    rev = head[2] if len(head) == 3 and head[2] else "1991"
    if rev not in REVISIONS:
        raise r.error(f"revision year {rev!r} is not 1991, 1999 or 2013")
    rev = REVISIONS[rev]
    tt, na, nd = r.fields("channel counts (TT,##A,##D)", 3, 3)
    total = r.integer(tt, "total channel count")
    n_a, n_d = _count(r, na, "A", "analog channel"), _count(r, nd, "D", "digital channel")
    if total != n_a + n_d:
        raise r.error(f"total channel count {total} is not {n_a} analog + {n_d} digital")
    analog = []
    for k in range(1, n_a + 1):
        what = f"analog channel {k} of {n_a}"
        f = r.fields(what, 10 if rev == "1991" else 13, 13) + [""] * 3
        r.integer(f[0], f"{what}: channel index", lo=1)
        a = r.number(f[5], f"{what}: multiplier a")
        b = r.number(f[6], f"{what}: offset b", default=0.0)
        primary = r.number(f[10], f"{what}: primary factor", default=1.0)
        secondary = r.number(f[11], f"{what}: secondary factor", default=1.0)
        ps = f[12].upper() or "P"
        if ps not in ("P", "S"):
            raise r.error(f"{what}: primary/secondary flag {f[12]!r} is not P or S")
        if ps == "S" and (primary == 0 or secondary == 0):
            raise r.error(f"{what}: primary and secondary factors must not be 0")
        to_primary = primary / secondary if ps == "S" else 1.0
        analog.append(_Analog(f[1] or f"A{k}", f[4], a, b, to_primary))
    digital = []
    for k in range(1, n_d + 1):
        f = r.fields(f"digital channel {k} of {n_d}", 3, 5)
        r.integer(f[0], f"digital channel {k}: channel index", lo=1)
        digital.append(f[1])
    lf = r.number(r.fields("line frequency", 1, 1)[0], "line frequency", default=0.0)
    nrates = r.integer(r.fields("number of sampling rates", 1, 1)[0], "number of sampling rates")
    rates: list[tuple[float, int]] = []
    for k in range(1, max(nrates, 1) + 1):
        samp, end = r.fields(f"sampling rate {k} (samp,endsamp)", 2, 2)
        rate = 0.0 if nrates == 0 else r.number(samp, f"sampling rate {k}")
        last = r.integer(end, f"last sample number of rate {k}", lo=1)
        if rate < 0 or (rates and last <= rates[-1][1]):
            raise r.error(f"sampling rate {k} ({samp},{end}) does not follow on from rate {k - 1}")
        rates.append((rate, last))
    start, digits = _date(r, r.next("start date and time"), rev)
    _, trigger_digits = _date(r, r.next("trigger date and time"), rev)
    file_type = r.fields("data file type", 1, 1)[0].upper()
    if file_type not in FILE_TYPES:
        raise r.error(f"data file type {file_type!r} is not one of {', '.join(FILE_TYPES)}")
    mult = 1.0
    if rev != "1991" and (f := r.next("time multiplier", optional=True)) is not None:
        mult = r.number(f[0], "time multiplier", default=1.0)
        if mult <= 0:
            raise r.error(f"time multiplier {mult:g} must be positive")
    if rev == "2013" and (f := r.next("time code", optional=True)) is not None:
        zone = _time_code(r, f[0])
        _time_code(r, f[1] if len(f) > 1 else "")
        start = start.replace(tzinfo=zone) if start is not None and zone else start
        if (f := r.next("time quality", optional=True)) is not None and any(f):
            if not re.fullmatch(r"[0-9a-fA-F]", f[0]) or f[-1] not in ("0", "1", "2", "3"):
                raise r.error(f"time quality {','.join(f)!r} is not 'tmq_code,leapsec'")
    base = 1e-9 if rev == "2013" and max(digits, trigger_digits) > 6 else 1e-6
    return _Config(rev, tuple(analog), tuple(digital), lf or None, tuple(rates),
                   rates[-1][1], start, base * mult, file_type)


def _parse_ascii(cfg: _Config, raw: bytes, name: str, line0: int = 0) -> _Parsed:
    n_a, n_d = len(cfg.analog), len(cfg.digital)
    lines = split_lines(raw)
    if not lines:
        raise RecordingError(f"{name}: no samples")
    ncols = 2 + n_a + n_d
    fields = np.fromiter((ln.count(",") + 1 for ln in lines), int, len(lines))
    if (bad := np.flatnonzero(fields != ncols)).size:
        i = int(bad[0])
        hint = " (file truncated?)" if i == len(lines) - 1 and fields[i] < ncols else ""
        raise RecordingError(
            f"{name} line {line0 + i + 1}: {fields[i]} fields, expected {ncols} (sample number,"
            f" timestamp, {n_a} analog, {n_d} digital values){hint}"
        )
    if len(lines) != cfg.n_samples:
        raise RecordingError(
            f"{name}: {len(lines)} samples, but the configuration announces {cfg.n_samples}"
            + (" (file truncated?)" if len(lines) < cfg.n_samples else "")
        )
    cols = list(range(2, ncols)) + ([1] if _critical(cfg) else [])
    labels = ([f"analog channel {c.name!r} value" for c in cfg.analog]
              + [f"digital channel {d!r} value" for d in cfg.digital] + ["timestamp"])
    table = parse_table(lines, ",", cols, name, line0, labels)
    values, status = table[:, :n_a], table[:, n_a:n_a + n_d]
    if cfg.rev != "1991":
        values[values == 99999] = np.nan
    if (bad := np.argwhere((status != 0) & (status != 1))).size:
        row, col = bad[0]
        raise RecordingError(
            f"{name} line {line0 + row + 1}: {labels[n_a + col]} {status[row, col]:g}"
            " is not 0 or 1"
        )
    ts = table[:, -1] if _critical(cfg) else None
    return values.T, status.T.astype(np.uint8), ts


def _parse_binary(cfg: _Config, raw: bytes, name: str) -> _Parsed:
    n_a, n_d = len(cfg.analog), len(cfg.digital)
    words = (n_d + 15) // 16
    rec = np.dtype([("n", "<u4"), ("t", "<u4"), ("a", BINARY_TYPES[cfg.file_type], (n_a,)),
                    ("d", "<u2", (words,))])
    if len(raw) % rec.itemsize == 1 and raw.endswith(b"\x1a"):
        raw = raw[:-1]
    if len(raw) % rec.itemsize:
        raise RecordingError(
            f"{name}: {len(raw)} bytes is not a whole number of {rec.itemsize}-byte"
            f" {cfg.file_type} records (sample number, timestamp, {n_a} analog values,"
            f" {words} status words): the file is truncated or the channel counts are wrong"
        )
    recs = np.frombuffer(raw, rec)
    if len(recs) != cfg.n_samples:
        raise RecordingError(
            f"{name}: {len(recs)} samples, but the configuration announces {cfg.n_samples}"
            + (" (file truncated?)" if len(recs) < cfg.n_samples else "")
        )
    missing = {"BINARY": -1 if cfg.rev == "1991" else -0x8000, "BINARY32": -0x80000000}
    values = recs["a"].T.astype(np.float64)
    if cfg.file_type in missing:
        values[recs["a"].T == missing[cfg.file_type]] = np.nan
    bits = np.arange(n_d)
    status = ((recs["d"][:, bits // 16] >> (bits % 16)) & 1).T.astype(np.uint8)
    ts = np.where(recs["t"] == _TS_MISSING, np.nan, recs["t"].astype(np.float64))
    return values, status, ts


def _critical(cfg: _Config) -> bool:
    """True when the sample times come from the DAT timestamps, not from sampling rates."""
    return any(rate == 0 for rate, _ in cfg.rates)


def _times(cfg: _Config) -> np.ndarray:
    """Sample times from the rate sections: each sample 1/samp after the one before."""
    dt = np.empty(cfg.n_samples)
    first = 0
    for rate, last in cfg.rates:
        dt[first:last] = 1.0 / rate
        first = last
    dt[0] = 0.0
    return np.cumsum(dt)


def _recording(cfg: _Config, parsed: _Parsed, path: str, data_name: str) -> Recording:
    values, status, ts = parsed
    scale = np.array([c.a * c.to_primary for c in cfg.analog]).reshape(-1, 1)
    offset = np.array([c.b * c.to_primary for c in cfg.analog]).reshape(-1, 1)
    data = values * scale + offset
    rates = {rate for rate, _ in cfg.rates}
    resampled = False
    if not _critical(cfg) and len(rates) == 1:
        fs = rates.pop()
    else:
        t = ts * cfg.timestamp_s if _critical(cfg) else _times(cfg)
        try:
            fs, data, resampled = regularise(t, data)
        except RecordingError as exc:
            raise RecordingError(f"{data_name}: {exc}") from None
        if resampled:
            status = status[:, hold(t, fs, data.shape[1])]
    return Recording(
        path=path,
        channels=tuple(c.name for c in cfg.analog),
        units=tuple(c.unit for c in cfg.analog),
        data=data,
        sample_rate_hz=float(fs),
        line_frequency_hz=cfg.line_frequency_hz,
        start_time=cfg.start_time,
        resampled=resampled,
        digital_channels=cfg.digital,
        digital=status,
    )


def _body(raw: bytes, header: re.Match) -> int:
    """Offset of the first byte after a CFF section header line."""
    return header.end() + (raw[header.end():header.end() + 1] == b"\n")


def _read_cff(path: Path) -> Recording:
    raw, name = read_bytes(path), str(path)
    headers = {}
    for m in _CFF_HEADER.finditer(raw):
        kind = m.group(1).decode().upper()
        headers.setdefault(kind, m)
        if kind == "DAT":
            break
    if "CFG" not in headers or "DAT" not in headers:
        missing = "CFG" if "CFG" not in headers else "DAT"
        raise RecordingError(f"{name}: no '--- file type: {missing} ---' section; not a CFF file?")
    cfg_m, dat_m = headers["CFG"], headers["DAT"]
    cfg_start = _body(raw, cfg_m)
    cfg_end = min((m.start() for m in headers.values() if m.start() > cfg_m.start()),
                  default=len(raw))
    cfg_lines = split_lines(raw[cfg_start:cfg_end])
    cfg = _parse_cfg(_Lines(name, cfg_lines, raw.count(b"\n", 0, cfg_start)))
    dat_type = (dat_m.group(2) or b"").decode().upper()
    if dat_type != cfg.file_type:
        raise RecordingError(
            f"{name}: DAT section is {dat_type or 'untyped'!r} but the CFG section says"
            f" {cfg.file_type!r}"
        )
    start = _body(raw, dat_m)
    if cfg.file_type == "ASCII":
        return _recording(cfg, _parse_ascii(cfg, raw[start:], name, raw.count(b"\n", 0, start)),
                          name, name)
    size = int(dat_m.group(3)) if dat_m.group(3) else len(raw) - start
    if len(raw) - start < size:
        raise RecordingError(
            f"{name}: DAT section announces {size} bytes but only {len(raw) - start} follow"
            " (file truncated?)"
        )
    return _recording(cfg, _parse_binary(cfg, raw[start:start + size], name), name, name)


def read_comtrade(path: str | Path, dat_path: str | Path | None = None) -> Recording:
    """Read a COMTRADE record: a .cff file, or a .cfg with its .dat (found beside it when
    ``dat_path`` is None, in any letter case)."""
    p = Path(path)
    if p.suffix.lower() == ".cff":
        return _read_cff(p)
    cfg = _parse_cfg(_Lines(str(p), split_lines(read_bytes(p))))
    dat = Path(dat_path) if dat_path is not None else find_sibling(p, ".dat")
    if dat is None or not dat.is_file():
        want = dat or p.with_suffix(".dat")
        raise RecordingError(f"{want}: data file not found (needed by {p})")
    raw = read_bytes(dat)
    parsed = (_parse_ascii(cfg, raw, str(dat)) if cfg.file_type == "ASCII"
              else _parse_binary(cfg, raw, str(dat)))
    return _recording(cfg, parsed, str(p), str(dat))
