"""COMTRADE reader: real recordings cross-checked against the ``comtrade`` package, synthetic
files of every revision and format with known values, and corrupt files."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import comtrade
import numpy as np
import pytest

from pm4324.sources.comtrade import read_comtrade
from pm4324.sources.recording import RecordingError, open_recording

KEATING = "ieeecomtrade_keating_1999/keating_1999.CFG"
# for parametrizing at collection time; the `waveforms` fixture (conftest) skips when absent
WAVEFORMS = Path(__file__).resolve().parents[3] / "shared" / "data" / "waveforms"


def _real_files() -> list[str]:
    root = WAVEFORMS
    found = [p for p in root.glob("*/*") if p.suffix.lower() in (".cfg", ".cff")]
    return sorted(str(p.relative_to(root)) for p in found) or [KEATING]


def _reference(path: Path) -> comtrade.Comtrade:
    ref = comtrade.Comtrade(use_numpy_arrays=True, use_double_precision=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ref.load(str(path))


def _check_against_reference(rec, path: Path) -> None:
    ref = _reference(path)
    assert rec.channels == tuple(ref.analog_channel_ids)
    assert rec.digital_channels == tuple(ref.status_channel_ids)
    assert rec.data.shape == (ref.analog_count, ref.total_samples)
    assert not rec.resampled
    for k, chan in enumerate(ref.cfg.analog_channels):
        to_primary = chan.primary / chan.secondary if chan.pors.upper() == "S" else 1.0
        np.testing.assert_allclose(
            rec.data[k], np.asarray(ref.analog[k]) * to_primary, rtol=1e-12, atol=1e-9,
            err_msg=f"channel {rec.channels[k]}",
        )
    for k in range(ref.status_count):
        np.testing.assert_array_equal(rec.digital[k], ref.status[k])
    np.testing.assert_allclose(np.diff(ref.time), 1 / rec.sample_rate_hz, rtol=1e-9)
    assert rec.sample_rate_hz == ref.cfg.sample_rates[-1][0]
    assert rec.line_frequency_hz == ref.frequency
    assert rec.start_time.replace(tzinfo=None) == ref.start_timestamp


@pytest.mark.parametrize("name", _real_files())
def test_real_file_matches_comtrade_package(waveforms, name):
    path = waveforms / name
    _check_against_reference(read_comtrade(path), path)


def test_keating_content(waveforms):
    rec = open_recording(waveforms / KEATING)
    assert rec.channels == ("I1", "I2", "I3", "I4", "U1", "U2", "U3", "U4")
    assert rec.units[0] == "ampere" and rec.units[4] == "volt"
    assert rec.data.shape == (8, 2048)
    assert rec.sample_rate_hz == 30707.244140625
    assert rec.line_frequency_hz == 60.0
    assert rec.start_time == datetime(2015, 11, 18, 5, 33, 3, 765333)
    # negative a: the first I1 sample is raw 1571
    assert rec.data[0, 0] == pytest.approx(-0.0197614394128323 * 1571 + 25.3736882060767)
    rms = np.sqrt(np.mean(rec.data**2, axis=1))
    assert np.all((rms[4:7] > 340) & (rms[4:7] < 356))
    assert np.all((rms[0:3] > 120) & (rms[0:3] < 170))


def test_dat_path_and_cff_give_the_same_recording(waveforms):
    samples = waveforms / "python_comtrade_samples"
    via_cfg = open_recording(samples / "sample_ascii.cfg")
    via_dat = open_recording(samples / "sample_ascii.dat")
    via_cff = open_recording(samples / "sample_ascii.cff")
    for rec in (via_dat, via_cff):
        np.testing.assert_array_equal(rec.data, via_cfg.data)
        np.testing.assert_array_equal(rec.digital, via_cfg.digital)
        assert rec.sample_rate_hz == via_cfg.sample_rate_hz == 1200.0
    # 2013 time code "-5h30" becomes the start time's zone; the S flag scales to primary
    assert via_cfg.start_time == datetime(
        2011, 1, 12, 5, 55, 30, 75011, tzinfo=timezone(-timedelta(hours=5, minutes=30))
    )
    assert via_cfg.channels == ("IA", "IB", "IC", "3I0")
    assert via_cfg.data[0, 0] == pytest.approx((0.1138916015625 * -83 + 0.05694580078125) * 933)


# ---------------------------------------------------------------------------------------------
# Synthetic files


def _cfg_text(
    rev: str, ft: str, analog: list[tuple], digital: list[str], rates: list[tuple],
    start: str = "01/02/2020,03:04:05.000000", extra: tuple[str, ...] = (), lf: str = "50",
) -> str:
    """CFG lines; analog entries are (name, unit, a, b, primary, secondary, ps)."""
    lines = ["station,device" + ("" if rev == "1991" else f",{rev}")]
    lines.append(f"{len(analog) + len(digital)},{len(analog)}A,{len(digital)}D")
    for k, (name, unit, a, b, p, s, ps) in enumerate(analog, start=1):
        line = f"{k},{name},,,{unit},{a!r},{b!r},0,-32767,32767"
        lines.append(line if rev == "1991" else f"{line},{p},{s},{ps}")
    for k, name in enumerate(digital, start=1):
        lines.append(f"{k},{name},0" if rev == "1991" else f"{k},{name},,,0")
    lines += [lf, str(len(rates) if rates[0][0] else 0)]
    lines += [f"{fs:g},{end}" for fs, end in rates]
    lines += [start, start, ft]
    if rev != "1991":
        lines.append(extra[0] if extra else "1")
    lines += list(extra[1:])
    return "\r\n".join(lines) + "\r\n"


def _dat_bytes(ft: str, raw: np.ndarray, status: np.ndarray, ts: np.ndarray) -> bytes:
    n = raw.shape[1]
    if ft == "ASCII":
        rows = []
        for k in range(n):
            values = [("" if np.isnan(v) else f"{v:g}") for v in raw[:, k]]
            rows.append(",".join([str(k + 1), f"{ts[k]:d}", *values, *map(str, status[:, k])]))
        return ("\r\n".join(rows) + "\r\n").encode()
    words = (status.shape[0] + 15) // 16
    width = {"BINARY": "<i2", "BINARY32": "<i4", "FLOAT32": "<f4"}[ft]
    rec = np.zeros(n, np.dtype([("n", "<u4"), ("t", "<u4"), ("a", width, (raw.shape[0],)),
                                ("d", "<u2", (words,))]))
    rec["n"] = np.arange(1, n + 1)
    rec["t"] = ts
    rec["a"] = raw.T
    for bit in range(status.shape[0]):
        rec["d"][:, bit // 16] |= status[bit].astype(np.uint16) << (bit % 16)
    return rec.tobytes()


ANALOG = [("Va", "V", 0.5, 1.0, 1, 1, "P"), ("Ia", "A", -0.01, 0.25, 400, 5, "S")]
RAW = np.array([[100, -200, 300, -400, 500, 0], [7, -7, 32767, -32767, 1, 2]], dtype=float)
STATUS = (np.arange(17 * 6).reshape(17, 6) % 3 == 0).astype(np.uint8)
TS = np.arange(6) * 1000


def _expected(rev: str = "1999") -> np.ndarray:
    expected = np.empty_like(RAW)
    expected[0] = 0.5 * RAW[0] + 1.0
    expected[1] = (-0.01 * RAW[1] + 0.25) * (400 / 5 if rev != "1991" else 1)
    return expected


def _write(tmp_path: Path, stem: str, cfg: str, dat: bytes, cfg_suffix=".cfg", dat_suffix=".dat"):
    (tmp_path / f"{stem}{cfg_suffix}").write_text(cfg, newline="")
    (tmp_path / f"{stem}{dat_suffix}").write_bytes(dat)
    return tmp_path / f"{stem}{cfg_suffix}"


FORMATS = [("1991", "ASCII"), ("1991", "BINARY"), ("1999", "ASCII"), ("1999", "BINARY"),
           ("2013", "ASCII"), ("2013", "BINARY"), ("2013", "BINARY32"), ("2013", "FLOAT32")]


@pytest.mark.parametrize("rev,ft", FORMATS)
def test_every_revision_and_format(tmp_path, rev, ft):
    extra = ("1", "+10,+10", "0,0") if rev == "2013" else ()
    cfg = _cfg_text(rev, ft, ANALOG, [f"D{k}" for k in range(17)], [(1000, 6)], extra=extra)
    path = _write(tmp_path, "rec", cfg, _dat_bytes(ft, RAW, STATUS, TS))
    rec = read_comtrade(path)
    assert rec.channels == ("Va", "Ia") and rec.units == ("V", "A")
    np.testing.assert_allclose(rec.data, _expected(rev), rtol=1e-12)
    np.testing.assert_array_equal(rec.digital, STATUS)
    assert rec.sample_rate_hz == 1000.0 and rec.line_frequency_hz == 50.0
    day, month = (2, 1) if rev == "1991" else (1, 2)  # 1991 dates are mm/dd/yy
    zone = timezone(timedelta(hours=10)) if rev == "2013" else None
    assert rec.start_time == datetime(2020, month, day, 3, 4, 5, tzinfo=zone)
    if (rev, ft) != ("1991", "BINARY"):  # the package reads raw -1 as missing here
        _check_against_reference(rec, path)


@pytest.mark.parametrize(
    "rev,ft,marker",
    [("1991", "BINARY", -1), ("1999", "BINARY", -32768), ("2013", "BINARY32", -(2**31)),
     ("1999", "ASCII", 99999), ("1991", "ASCII", np.nan), ("2013", "ASCII", np.nan)],
)
def test_missing_values_become_nan(tmp_path, rev, ft, marker):
    raw = RAW.copy()
    raw[0, 2] = marker
    raw[1, 4] = marker
    cfg = _cfg_text(rev, ft, ANALOG, [], [(1000, 6)])
    rec = read_comtrade(_write(tmp_path, "m", cfg, _dat_bytes(ft, raw, STATUS[:0], TS)))
    nan = np.isnan(rec.data)
    assert nan[0, 2] and nan[1, 4] and nan.sum() == 2


def test_float32_missing_pattern_is_nan(tmp_path):
    cfg = _cfg_text("2013", "FLOAT32", ANALOG, [], [(1000, 6)])
    dat = bytearray(_dat_bytes("FLOAT32", RAW, STATUS[:0], TS))
    dat[8:12] = b"\xff\xff\xff\xff"  # first sample of Va
    rec = read_comtrade(_write(tmp_path, "f", cfg, bytes(dat)))
    assert np.isnan(rec.data[0, 0]) and np.isnan(rec.data).sum() == 1


@pytest.mark.parametrize("eol", ["\r\n", "\n"])
def test_line_endings_eof_byte_and_suffix_case(tmp_path, eol):
    cfg = _cfg_text("1999", "ASCII", ANALOG, ["D1"], [(1000, 6)]).replace("\r\n", eol)
    dat = _dat_bytes("ASCII", RAW, STATUS[:1], TS).replace(b"\r\n", eol.encode()) + b"\x1a"
    path = _write(tmp_path, "Mixed", cfg, dat, cfg_suffix=".CFG", dat_suffix=".dAt")
    for rec in (open_recording(path), open_recording(tmp_path / "Mixed.dAt")):
        np.testing.assert_allclose(rec.data, _expected(), rtol=1e-12)
        np.testing.assert_array_equal(rec.digital, STATUS[:1])


@pytest.mark.parametrize("ft", ["ASCII", "BINARY", "FLOAT32"])
def test_cff_single_file(tmp_path, ft):
    extra = ("1", "-5h30,-5h30", "B,3")
    cfg = _cfg_text("2013", ft, ANALOG, ["D1", "D2"], [(1000, 6)], extra=extra)
    dat = _dat_bytes(ft, RAW, STATUS[:2], TS)
    head = f"--- file type: DAT {ft}" + ("" if ft == "ASCII" else f": {len(dat)}") + " ---"
    text = (f"--- file type: CFG ---\r\n{cfg}--- file type: INF ---\r\n\r\n"
            f"--- file type: HDR ---\r\nfree text\r\n{head}\r\n").encode()
    path = tmp_path / "one.CFF"
    path.write_bytes(text + dat)
    rec = open_recording(path)
    np.testing.assert_allclose(rec.data, _expected(), rtol=1e-6 if ft == "FLOAT32" else 1e-12)
    np.testing.assert_array_equal(rec.digital, STATUS[:2])
    assert rec.start_time.utcoffset() == -timedelta(hours=5, minutes=30)
    _check_against_reference(rec, path)


def test_timestamps_drive_time_when_nrates_is_zero(tmp_path):
    # 1200 Hz in whole microseconds (833/834 us steps) with timemult 2: regular, not resampled
    ts = np.round(np.arange(6) * 1e6 / 1200 / 2).astype(int)
    cfg = _cfg_text("1999", "ASCII", ANALOG, [], [(0, 6)], extra=("2",))
    rec = read_comtrade(_write(tmp_path, "t", cfg, _dat_bytes("ASCII", RAW, STATUS[:0], ts)))
    assert not rec.resampled
    assert rec.sample_rate_hz == pytest.approx(1e6 / (2 * ts[-1] / 5))
    np.testing.assert_allclose(rec.data, _expected(), rtol=1e-12)


def test_nanosecond_timestamps_in_2013(tmp_path):
    ts = np.arange(6) * 20_000  # 20 us in ns
    start = "01/02/2020,03:04:05.000000000"
    cfg = _cfg_text("2013", "BINARY", ANALOG, [], [(0, 6)], start=start)
    rec = read_comtrade(_write(tmp_path, "ns", cfg, _dat_bytes("BINARY", RAW, STATUS[:0], ts)))
    assert rec.sample_rate_hz == pytest.approx(50_000.0, rel=1e-12)


def test_irregular_timestamps_are_resampled(tmp_path):
    ts = np.array([0, 1000, 2000, 2600, 3600, 4600])  # one short step
    raw = np.vstack([ts / 10.0, -ts / 20.0])  # linear in time: interpolation is exact
    cfg = _cfg_text("1999", "ASCII", ANALOG, ["D1"], [(0, 6)])
    status = np.array([[0, 1, 0, 1, 1, 0]], dtype=np.uint8)
    rec = read_comtrade(_write(tmp_path, "i", cfg, _dat_bytes("ASCII", raw, status, ts)))
    assert rec.resampled and rec.sample_rate_hz == pytest.approx(1000.0)
    grid = np.arange(rec.data.shape[1]) * 1000.0
    assert grid[-1] <= 4600
    np.testing.assert_allclose(rec.data[0], 0.5 * grid / 10 + 1.0, rtol=1e-12)
    # status channels hold the value of the sample at or before each grid point
    np.testing.assert_array_equal(rec.digital[0], [0, 1, 0, 1, 1])


def test_several_sampling_rates(tmp_path):
    # 4 samples at 1000 Hz, then 2 at 500 Hz: times 0,1,2,3,5,7 ms
    raw = np.vstack([np.array([0, 1, 2, 3, 5, 7]) * 10.0, np.zeros(6)])
    cfg = _cfg_text("1999", "BINARY", ANALOG, [], [(1000, 4), (500, 6)])
    rec = read_comtrade(_write(tmp_path, "r", cfg, _dat_bytes("BINARY", raw, STATUS[:0], TS)))
    assert rec.resampled and rec.sample_rate_hz == pytest.approx(1000.0)
    np.testing.assert_allclose(rec.data[0], 0.5 * np.arange(8) * 10.0 + 1.0, rtol=1e-12)
    same = _cfg_text("1999", "BINARY", ANALOG, [], [(1000, 4), (1000, 6)])
    rec = read_comtrade(_write(tmp_path, "s", same, _dat_bytes("BINARY", RAW, STATUS[:0], TS)))
    assert not rec.resampled and rec.sample_rate_hz == 1000.0


def test_leap_second_start_time(tmp_path):
    start = "31/12/2016,23:59:60.500000"
    cfg = _cfg_text("2013", "ASCII", ANALOG, [], [(1000, 6)], start=start,
                    extra=("1", "0,0", "0,1"))
    rec = read_comtrade(_write(tmp_path, "leap", cfg, _dat_bytes("ASCII", RAW, STATUS[:0], TS)))
    assert rec.start_time == datetime(2017, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# Corrupt files: always a RecordingError that names the file and says what is wrong


def _good() -> tuple[str, bytes]:
    cfg = _cfg_text("1999", "ASCII", ANALOG, ["D1"], [(1000, 6)])
    return cfg, _dat_bytes("ASCII", RAW, STATUS[:1], TS)


def test_truncated_ascii_dat(tmp_path, waveforms):
    dat = (waveforms / KEATING).with_suffix(".DAT").read_bytes()
    cut = dat.index(b"\r\n1000,,") + 12  # in the middle of sample 1000
    (tmp_path / "k.cfg").write_bytes((waveforms / KEATING).read_bytes())
    (tmp_path / "k.dat").write_bytes(dat[:cut])
    with pytest.raises(RecordingError, match=r"k\.dat line 1000: .*expected 10.*truncated"):
        read_comtrade(tmp_path / "k.cfg")
    (tmp_path / "k.dat").write_bytes(dat[: dat.index(b"\r\n1000,,") + 2])
    with pytest.raises(RecordingError, match=r"k\.dat: 999 samples, but .* 2048 .*truncated"):
        read_comtrade(tmp_path / "k.cfg")


def test_nrates_zero_needs_timestamps(tmp_path, waveforms):
    cfg = (waveforms / KEATING).read_bytes().replace(b"\r\n1\r\n30707", b"\r\n0\r\n30707")
    (tmp_path / "k.cfg").write_bytes(cfg)
    (tmp_path / "k.dat").write_bytes((waveforms / KEATING).with_suffix(".DAT").read_bytes())
    with pytest.raises(RecordingError, match=r"k\.dat: timestamp of sample 1 is missing"):
        read_comtrade(tmp_path / "k.cfg")


def test_truncated_binary_dat(tmp_path):
    cfg = _cfg_text("1999", "BINARY", ANALOG, ["D1"], [(1000, 6)])
    dat = _dat_bytes("BINARY", RAW, STATUS[:1], TS)
    path = _write(tmp_path, "b", cfg, dat[:-5])
    with pytest.raises(RecordingError, match=r"b\.dat: 79 bytes is not a whole number of 14-byte"):
        read_comtrade(path)
    _write(tmp_path, "b", cfg, dat[:-14])
    with pytest.raises(RecordingError, match=r"5 samples, but the configuration announces 6"):
        read_comtrade(path)


@pytest.mark.parametrize(
    "old,new,message",
    [
        ("3,2A,1D", "3,2A,2D", r"line 2: total channel count 3 is not 2 analog \+ 2 digital"),
        ("3,2A,1D", "3,2B,1D", r"line 2: analog channel count '2B' must end in 'A'"),
        ("3,2A,1D", "4,3A,1D", r"line 5: analog channel 3 of 3: expected 13 comma-separated fields, found 5"),
        ("0.5,1.0", "0.5,1.O", r"line 3: analog channel 1 of 2: offset b '1.O' is not a number"),
        ("400,5,S", "400,5,X", r"line 4: .*primary/secondary flag 'X' is not P or S"),
        ("400,5,S", "400.5,S", r"line 4: analog channel 2 of 2: expected 13 .* found 12"),
        ("400,5,S", "400,0,S", r"line 4: .*factors must not be 0"),
        ("\r\n1000,6", "\r\n10#0,6", r"line 8: sampling rate 1 '10#0' is not a number"),
        ("\r\nASCII", "\r\nASCIJ", r"line 11: data file type 'ASCIJ' is not one of"),
        (",1999", ",1989", r"line 1: revision year '1989' is not 1991, 1999 or 2013"),
        ("01/02/2020,03:04:05", "01/13/2020,03:04:05", r"line 9: date/time .* is not valid"),
        ("\r\n1000,6", "\r\n1000,7", r"6 samples, but the configuration announces 7"),
        ("ASCII\r\n1\r\n", "ASCII\r\n0\r\n", r"line 12: time multiplier 0 must be positive"),
    ],
)
def test_corrupt_cfg_fields(tmp_path, old, new, message):
    cfg, dat = _good()
    assert old in cfg
    path = _write(tmp_path, "c", cfg.replace(old, new, 1), dat)
    with pytest.raises(RecordingError, match=message):
        read_comtrade(path)


def test_cfg_that_ends_early(tmp_path):
    cfg, dat = _good()
    path = _write(tmp_path, "e", "\r\n".join(cfg.split("\r\n")[:7]), dat)
    with pytest.raises(RecordingError, match=r"e\.cfg: configuration ends after line 7"):
        read_comtrade(path)


def test_non_numeric_and_ragged_dat(tmp_path):
    cfg, dat = _good()
    path = _write(tmp_path, "n", cfg, dat.replace(b"3,2000,300,", b"3,2000,3x0,"))
    with pytest.raises(RecordingError, match=r"n\.dat line 3: analog channel 'Va' value '3x0'"):
        read_comtrade(path)
    _write(tmp_path, "n", cfg, dat.replace(b"3,2000,300,", b"3,2000,"))
    with pytest.raises(RecordingError, match=r"line 3: 4 fields, expected 5 \(sample number"):
        read_comtrade(path)
    _write(tmp_path, "n", cfg, dat.replace(b",1\r\n", b",2\r\n", 1))
    with pytest.raises(RecordingError, match=r"line 1: digital channel 'D1' value 2 is not 0 or 1"):
        read_comtrade(path)


def test_missing_and_empty_files(tmp_path):
    cfg, dat = _good()
    (tmp_path / "only.cfg").write_text(cfg)
    with pytest.raises(RecordingError, match=r"only\.dat: data file not found \(needed by .*only"):
        read_comtrade(tmp_path / "only.cfg")
    (tmp_path / "lone.dat").write_bytes(dat)
    with pytest.raises(RecordingError, match=r"lone\.dat: no configuration file lone\.cfg"):
        open_recording(tmp_path / "lone.dat")
    _write(tmp_path, "empty", "", dat)
    with pytest.raises(RecordingError, match=r"empty\.cfg: file is empty"):
        read_comtrade(tmp_path / "empty.cfg")
    _write(tmp_path, "nodat", cfg, b"\x1a")
    with pytest.raises(RecordingError, match=r"nodat\.dat: file is empty"):
        read_comtrade(tmp_path / "nodat.cfg")
    with pytest.raises(RecordingError, match=r"nothere\.cfg: file not found"):
        open_recording(tmp_path / "nothere.cfg")
    with pytest.raises(RecordingError, match=r"unknown recording type '\.wav'"):
        open_recording(tmp_path / "x.wav")
    (tmp_path / "bad.cff").write_bytes(b"station,dev,2013\r\n")
    with pytest.raises(RecordingError, match=r"bad\.cff: no '--- file type: CFG ---' section"):
        open_recording(tmp_path / "bad.cff")


def test_random_bit_flips_never_leak_other_errors(tmp_path, waveforms):
    """Any single flipped bit either still reads or gives a RecordingError."""
    rng = np.random.default_rng(4324)
    sources = [waveforms / "python_comtrade_samples" / n for n in ("sample_ascii.cfg",
               "sample_ascii.dat", "sample_bin.cfg", "sample_bin.dat", "sample_ascii.cff")]
    for src in sources:
        stem = src.stem
        for other in src.parent.glob(f"{stem}.*"):
            (tmp_path / other.name).write_bytes(other.read_bytes())
        original = src.read_bytes()
        target = tmp_path / src.name
        opened = tmp_path / (f"{stem}.cff" if src.suffix == ".cff" else f"{stem}.cfg")
        for _ in range(60):
            flipped = bytearray(original)
            pos = int(rng.integers(len(flipped)))
            flipped[pos] ^= 1 << int(rng.integers(8))
            target.write_bytes(bytes(flipped))
            try:
                open_recording(opened)
            except RecordingError as exc:
                assert str(exc).startswith(str(tmp_path)), str(exc)
        target.write_bytes(original)
