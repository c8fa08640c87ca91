"""CSV recordings: a header row, one time column, one column per channel.

The tricky parts:

* The time column is the one named like ``t``, ``time``, ``Time_UTC``, ``timestamp`` or
  ``datetime`` (units in brackets allowed: ``Time (s)``), else the first column.
* Times are numeric seconds or date-times ``YYYY-MM-DD hh:mm:ss.fffffffff`` (a ``T`` in
  place of the space, and a trailing ``Z``, are accepted). Recorders write nanosecond
  digits that Python's ``datetime`` would cut to microseconds, so date-times go through
  numpy ``datetime64[ns]`` and become float64 seconds relative to the first row.
* Steps may be irregular (a recorder hiccup); ``regularise`` then resamples onto the median
  step. Units are not part of the format, so they are "".
* Blank cells are missing samples (NaN); anything else that is not a number is an error
  naming its line and column. The delimiter is a comma, or ``;`` / tab when the header has
  no comma.
"""

from __future__ import annotations

import re
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np

from pm4324.sources.recording import (
    Recording,
    RecordingError,
    parse_table,
    read_bytes,
    regularise,
    split_lines,
)

_TIME_NAME = re.compile(r"(t|time\w*|timestamp\w*|datetime|date_time)(\s*[\[(].*)?", re.I)
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z?")
_HINT = (
    "name a column t, time or timestamp, or put times (seconds, or YYYY-MM-DD"
    " hh:mm:ss.fffffffff) in the first column"
)


def _header(name: str, line: str) -> tuple[str, list[str]]:
    delim = next((d for d in (",", ";", "\t") if d in line), ",")
    names = [h.strip().strip('"').strip() for h in line.split(delim)]
    if len(names) < 2:
        raise RecordingError(
            f"{name} line 1: header {line.strip()!r} has one column; expected a time column"
            " and at least one channel, separated by commas"
        )
    for k, col in enumerate(names):
        if not col:
            raise RecordingError(f"{name} line 1: column {k + 1} has no name")
        if names.index(col) != k:
            raise RecordingError(f"{name} line 1: column name {col!r} appears twice")
    return delim, names


def _time_column(names: list[str]) -> int:
    return next((k for k, col in enumerate(names) if _TIME_NAME.fullmatch(col)), 0)


def _is_datetime(text: str) -> bool:
    """One date-time in our pattern that numpy can represent (for error messages)."""
    if not _DATETIME.fullmatch(text):
        return False
    try:
        return not np.isnat(np.datetime64(text.rstrip("Z"), "ns"))
    except ValueError:
        return False


def _datetimes(name: str, label: str, col: np.ndarray) -> tuple[np.ndarray, datetime]:
    """Seconds since the first row, and the first row's date-time (microseconds)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy only warns about time zones
            ns = np.char.rstrip(col, "Z").astype("datetime64[ns]")
    except (ValueError, Warning):
        ns = None
    if ns is None or np.isnat(ns).any():
        row = next((k for k, text in enumerate(col) if not _is_datetime(str(text))), 0)
        raise RecordingError(
            f"{name} line {row + 2}: {label} {str(col[row])!r} is not a date-time like"
            " 2020-02-24 18:15:21.499998208"
        ) from None
    seconds = (ns - ns[0]).astype(np.int64).astype(np.float64) * 1e-9
    return seconds, ns[0].astype("datetime64[us]").item()


def _times(
    name: str, label: str, lines: list[str], delim: str, tcol: int
) -> tuple[np.ndarray, datetime | None]:
    """Seconds since the first row, and the first row's date-time (None for seconds)."""
    first = lines[0].split(delim)[tcol].strip()
    if _DATETIME.fullmatch(first):
        col = np.char.strip(np.loadtxt(lines, str, delimiter=delim, usecols=[tcol],
                                       comments=None, ndmin=1))
        return _datetimes(name, label, col)
    try:
        float(first)
    except ValueError:
        raise RecordingError(
            f"{name} line 2: no time column: {label} holds {first!r}, which is neither seconds"
            f" nor a date-time; {_HINT}"
        ) from None
    t = parse_table(lines, delim, [tcol], name, 1, [label])[:, 0]
    if (blank := np.flatnonzero(np.isnan(t))).size:
        raise RecordingError(f"{name} line {blank[0] + 2}: {label} is blank or not a number")
    return t - t[0], None


def read_csv(path: str | Path) -> Recording:
    """Read a CSV recording; channels keep their header names, in file order."""
    p = Path(path)
    name = str(p)
    lines = split_lines(read_bytes(p))
    delim, names = _header(name, lines[0])
    rows = lines[1:]
    if not rows:
        raise RecordingError(f"{name}: no data rows after the header")
    if len(rows) < 2:
        raise RecordingError(f"{name}: one data row; need at least two to find the sample rate")
    fields = np.fromiter((row.count(delim) + 1 for row in rows), int, len(rows))
    if (bad := np.flatnonzero(fields != len(names))).size:
        i = int(bad[0])
        hint = " (file truncated?)" if i == len(rows) - 1 and fields[i] < len(names) else ""
        raise RecordingError(
            f"{name} line {i + 2}: {fields[i]} fields, but the header has {len(names)}{hint}"
        )
    tcol = _time_column(names)
    label = f"time column {names[tcol]!r}"
    times, start = _times(name, label, rows, delim, tcol)
    steps = np.diff(times)
    if (bad := np.flatnonzero(~(steps > 0))).size:
        row = int(bad[0]) + 1
        raise RecordingError(
            f"{name} line {row + 2}: {label} {rows[row].split(delim)[tcol].strip()!r} is not"
            f" after the previous row's {rows[row - 1].split(delim)[tcol].strip()!r}"
        )
    channels = [k for k in range(len(names)) if k != tcol]
    labels = [f"column {names[k]!r} value" for k in channels]
    data = parse_table(rows, delim, channels, name, 1, labels).T
    fs, data, resampled = regularise(times, data)
    return Recording(
        path=name,
        channels=tuple(names[k] for k in channels),
        units=("",) * len(channels),
        data=data,
        sample_rate_hz=fs,
        line_frequency_hz=None,
        start_time=start,
        resampled=resampled,
    )
