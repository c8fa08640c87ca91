"""A waveform recording read from a file, and what all file readers share.

Readers (COMTRADE, CSV) return a ``Recording``: analogue channels in primary units on one
regular time grid. Recorders do not always sample regularly (a CSV export may show a
dropped or shortened step; COMTRADE with ``nrates = 0`` or several rate sections gives
per-sample times), while the meter needs a fixed sample rate, so ``regularise`` puts
irregular samples onto a regular grid. Every problem with a file is a ``RecordingError``
whose message names the file and, where it applies, the line and what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from pm4324.sources.base import SourceError

#: samples count as regular when each lies within this fraction of a step of a uniform grid
#: (so whole-microsecond timestamps of a 12.8 kHz recording are regular)
REGULAR_TOLERANCE = 0.02


class RecordingError(SourceError):
    """A recording file cannot be read; the message says which file and why."""


@dataclass(frozen=True)
class Recording:
    """Analogue channels of one recording, in primary units, on a regular grid.

    digital_channels/digital: status channels (COMTRADE only), (n_digital, n_samples) uint8
    on the same grid (held from the preceding original sample when resampled).
    """

    path: str
    channels: tuple[str, ...]
    units: tuple[str, ...]
    data: np.ndarray
    sample_rate_hz: float
    line_frequency_hz: float | None
    start_time: datetime | None
    resampled: bool = False
    digital_channels: tuple[str, ...] = ()
    digital: np.ndarray | None = None

    @property
    def n_samples(self) -> int:
        return self.data.shape[1]

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sample_rate_hz


def regularise(times: np.ndarray, data: np.ndarray) -> tuple[float, np.ndarray, bool]:
    """Sample rate and data on a regular grid, and whether resampling was needed.

    times: (n,) seconds, increasing. data: (channels, n). Samples that already lie on a
    regular grid (within ``REGULAR_TOLERANCE`` of a step, e.g. timestamp quantisation) come
    back unchanged, bit for bit, at the mean rate. Otherwise the grid step is the median step
    (refined as the mean of the steps within 5 % of it, so quantised timestamps do not bias
    it) and each channel is linearly interpolated; NaN samples spread to their neighbours.
    """
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1 or data.ndim != 2 or data.shape[1] != t.size:
        raise RecordingError(f"{t.size} timestamps for data of shape {data.shape}")
    if t.size < 2:
        raise RecordingError(f"{t.size} sample(s): need at least 2 to find the sample rate")
    if not np.all(np.isfinite(t)):
        bad = int(np.flatnonzero(~np.isfinite(t))[0])
        raise RecordingError(f"timestamp of sample {bad + 1} is missing or not a number")
    steps = np.diff(t)
    if np.any(steps <= 0):
        bad = int(np.flatnonzero(steps <= 0)[0])
        raise RecordingError(
            f"timestamps do not increase: sample {bad + 2} (t = {t[bad + 1]:.9g} s) is not"
            f" after sample {bad + 1} (t = {t[bad]:.9g} s)"
        )
    mean_step = (t[-1] - t[0]) / (t.size - 1)
    grid = t[0] + np.arange(t.size) * mean_step
    if np.max(np.abs(t - grid)) <= REGULAR_TOLERANCE * mean_step:
        return 1.0 / mean_step, data, False
    median = float(np.median(steps))
    step = float(np.mean(steps[np.abs(steps - median) <= 0.05 * median]))
    n = int(np.floor((t[-1] - t[0]) / step * (1 + 1e-12))) + 1
    new_t = t[0] + np.arange(n) * step
    out = np.empty((data.shape[0], n), dtype=np.float64)
    for k, row in enumerate(np.asarray(data, dtype=np.float64)):
        out[k] = np.interp(new_t, t, row)
    return 1.0 / step, out, True


def hold(times: np.ndarray, fs: float, n: int) -> np.ndarray:
    """Index of the original sample at or before each of ``n`` grid points (for status data)."""
    grid = times[0] + np.arange(n) / fs
    return np.clip(np.searchsorted(times, grid, side="right") - 1, 0, len(times) - 1)


def find_sibling(path: Path, suffix: str) -> Path | None:
    """The file beside ``path`` with the same stem and ``suffix`` in any letter case."""
    exact = path.with_suffix(suffix)
    if exact.is_file() or not path.parent.is_dir():
        return exact if exact.is_file() else None
    want = (path.stem + suffix).lower()
    return next((p for p in sorted(path.parent.iterdir())
                 if p.name.lower() == want and p.is_file()), None)


def open_recording(path: str | Path) -> Recording:
    """Read a recording, choosing the reader by suffix (any letter case).

    .cfg/.cff/.dat: COMTRADE (a .dat needs its .cfg beside it); .csv: CSV.
    """
    from pm4324.sources.comtrade import read_comtrade
    from pm4324.sources.csvfile import read_csv

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".cfg", ".cff"):
        return read_comtrade(p)
    if suffix == ".dat":
        cfg = find_sibling(p, ".cfg")
        if cfg is None:
            raise RecordingError(f"{p}: no configuration file {p.stem}.cfg beside this DAT file")
        return read_comtrade(cfg, dat_path=p)
    if suffix == ".csv":
        return read_csv(p)
    raise RecordingError(
        f"{p}: unknown recording type {p.suffix or '(no suffix)'!r};"
        " use COMTRADE (.cfg, .cff, .dat) or .csv"
    )


def read_bytes(path: Path) -> bytes:
    """File contents, with a missing, unreadable or empty file reported as a RecordingError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecordingError(f"{path}: file not found") from None
    except OSError as exc:
        raise RecordingError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if not raw.strip(b"\x1a \t\r\n"):
        raise RecordingError(f"{path}: file is empty")
    return raw


def split_lines(raw: bytes) -> list[str]:
    """Text lines of a file: CRLF, LF or CR endings; a DOS end-of-file byte (0x1A) dropped.

    UTF-8 (with or without BOM) when it decodes, else Latin-1, which never fails: stray
    bytes then show up as bad fields with a line number, not as a decode error.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = text.rstrip("\x1a").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def parse_table(
    lines: list[str], delim: str, cols: list[int], name: str, line0: int, labels: list[str]
) -> np.ndarray:
    """Float64 (rows, len(cols)) of some columns of delimited lines whose field counts
    were already checked. Blank fields are NaN; a bad field raises with its line
    (``line0`` + row + 1) and ``labels`` entry.

    numpy's C parser reads clean files fast; only a file it refuses (blanks, bad text) goes
    through the slower field-by-field path that can say where the problem is.
    """
    if not cols:
        return np.empty((len(lines), 0))
    try:
        return np.loadtxt(lines, delimiter=delim, usecols=cols, comments=None, ndmin=2)
    except ValueError:
        pass
    cells = np.char.strip(np.array(delim.join(lines).split(delim)).reshape(len(lines), -1)[:, cols])
    blank = cells == ""
    try:
        return np.where(blank, "nan", cells).astype(np.float64)
    except ValueError:
        for (row, col), text in np.ndenumerate(cells):
            try:
                float(text or "nan")
            except ValueError:
                raise RecordingError(
                    f"{name} line {line0 + row + 1}: {labels[col]} {str(text)!r} is not a number"
                ) from None
        raise RecordingError(f"{name}: unreadable numbers") from None
