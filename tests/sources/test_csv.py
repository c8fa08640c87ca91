"""CSV recordings: the real MHKiT export, synthetic files with known values, and errors."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from pm4324.sources.csvfile import read_csv
from pm4324.sources.recording import RecordingError, open_recording, regularise

MHKIT = "mhkit_modaq_3ph/2020224_181521_PowRaw.csv"


def _write(tmp_path: Path, text: str, name: str = "rec.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, newline="")
    return path


def test_mhkit_export_is_resampled_onto_a_regular_grid(waveforms):
    path = waveforms / MHKIT
    rec = open_recording(path)
    assert rec.channels == ("MODAQ_Va_V", "MODAQ_Vb_V", "MODAQ_Vc_V",
                            "MODAQ_Ia_I", "MODAQ_Ib_I", "MODAQ_Ic_I")
    assert rec.units == ("",) * 6 and rec.line_frequency_hz is None
    assert rec.start_time == datetime(2020, 2, 24, 18, 15, 21, 499998)
    # one 17.756 us step among 20.000/20.001 us steps: detected, resampled at ~50 kHz
    assert rec.resampled
    assert rec.sample_rate_hz == pytest.approx(50_000, rel=1e-4)
    assert abs(rec.n_samples - 8000) <= 1
    first = [float(x) for x in path.read_text().splitlines()[1].split(",")[1:]]
    np.testing.assert_array_equal(rec.data[:, 0], first)  # the grid starts on row 1
    rms = np.sqrt(np.mean(rec.data**2, axis=1))
    assert np.all((rms[:3] > 7_700) & (rms[:3] < 8_200))
    assert np.all((rms[3:] > 17.3) & (rms[3:] < 18.1))
    # the samples before the short step are unchanged up to the 0.5 ns grid offset
    raw = np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(1, 7), max_rows=4000).T
    np.testing.assert_allclose(rec.data[:, :4000], raw, atol=0.01 * np.abs(raw).max())


def test_regular_numeric_times_pass_through_unchanged(tmp_path):
    t = np.arange(50) / 1000
    va = np.sin(2 * np.pi * 50 * t) * 325.27
    rows = "\n".join(f"{a!r},{b!r},{-b!r}" for a, b in zip(t.tolist(), va.tolist(), strict=True))
    rec = read_csv(_write(tmp_path, "time,Va,Ia\n" + rows + "\n"))
    assert not rec.resampled and rec.start_time is None
    assert rec.sample_rate_hz == pytest.approx(1000.0, rel=1e-12)
    np.testing.assert_array_equal(rec.data, [va, -va])
    assert rec.channels == ("Va", "Ia")


def test_nanosecond_date_times(tmp_path):
    base = 1_000_000_000  # 1 s into the minute, in ns
    stamps = [base + k * 20_000 for k in range(10)]
    rows = [f"2021-03-04T05:06:{ns // 10**9:02d}.{ns % 10**9:09d}Z,{k}" for k, ns in
            enumerate(stamps)]
    rec = read_csv(_write(tmp_path, "Time_UTC,x\r\n" + "\r\n".join(rows) + "\r\n"))
    assert rec.sample_rate_hz == pytest.approx(50_000, rel=1e-12)
    assert not rec.resampled
    assert rec.start_time == datetime(2021, 3, 4, 5, 6, 1)
    np.testing.assert_array_equal(rec.data[0], np.arange(10))


def test_irregular_step_is_resampled_by_linear_interpolation(tmp_path):
    t = np.array([0, 1, 2, 3, 3.6, 4.6, 5.6, 6.6]) * 1e-3
    rows = "\n".join(f"{ti!r},{3 * ti + 1!r}" for ti in t.tolist())
    rec = read_csv(_write(tmp_path, "t,ramp\n" + rows))
    assert rec.resampled and rec.sample_rate_hz == pytest.approx(1000.0)
    grid = np.arange(rec.n_samples) / 1000
    assert rec.n_samples == 7
    np.testing.assert_allclose(rec.data[0], 3 * grid + 1, rtol=1e-12)


def test_time_column_by_name_delimiters_blanks_and_bom(tmp_path):
    text = "\ufeffVa;Time (s);Ia\r\n1.5;0.0;2\r\n;0.5;3\r\n2.5;1.0;\r\n"
    rec = read_csv(_write(tmp_path, text))
    assert rec.channels == ("Va", "Ia")
    assert rec.sample_rate_hz == pytest.approx(2.0)
    np.testing.assert_array_equal(np.isnan(rec.data), [[0, 1, 0], [0, 0, 1]])
    assert rec.data[0, 0] == 1.5 and rec.data[1, 1] == 3


def test_regularise_contract():
    t = np.arange(5) * 0.25
    data = np.arange(10.0).reshape(2, 5)
    fs, out, resampled = regularise(t, data)
    assert out is data and fs == 4.0 and not resampled
    # quantised timestamps (12.8 kHz in whole microseconds) still count as regular
    tq = np.round(np.arange(100) / 12_800 * 1e6) * 1e-6
    fs, _, resampled = regularise(tq, np.zeros((1, 100)))
    assert not resampled and fs == pytest.approx(12_800, rel=1e-4)
    with pytest.raises(RecordingError, match="sample 3 .* is not after sample 2"):
        regularise(np.array([0.0, 1.0, 1.0]), np.zeros((1, 3)))


@pytest.mark.parametrize(
    "text,message",
    [
        ("t,Va\n0,1\n0.001,abc\n", r"line 3: column 'Va' value 'abc' is not a number"),
        ("t,Va,Ia\n0,1,2\n0.001,1\n", r"line 3: 2 fields, but the header has 3 \(file trunc"),
        ("t,Va,Ia\n0,1,2,3\n0.001,1,2\n", r"line 2: 4 fields, but the header has 3$"),
        ("t,Va\n", r"no data rows after the header"),
        ("t,Va\n0,1\n", r"one data row; need at least two"),
        ("Va,Ia\nabc,1\nabd,2\n", r"line 2: no time column: time column 'Va' holds 'abc'"),
        ("t,Va\n0,1\n0.002,1\n0.001,1\n", r"line 4: time column 't' '0.001' is not after .* '0.002'"),
        ("t,Va\n0,1\n,1\n", r"line 3: time column 't' is blank"),
        ("time,Va\n2020-01-01 00:00:00,1\n2020-13-01 00:00:01,1\n",
         r"line 3: time column 'time' '2020-13-01 00:00:01' is not a date-time"),
        ("time,Va\n2020-01-01 00:00:00.0,1\n2020-01-01 00:00:00.1+01:00,1\n",
         r"line 3: time column 'time' '2020-01-01 00:00:00.1\+01:00' is not a date-time"),
        ("t,Va,Va\n0,1,2\n1,1,2\n", r"line 1: column name 'Va' appears twice"),
        ("t,,Va\n0,1,2\n1,1,2\n", r"line 1: column 2 has no name"),
        ("only\n1\n2\n", r"line 1: header 'only' has one column"),
        ("\r\n\r\n", r"file is empty"),
    ],
)
def test_errors_name_the_file_and_line(tmp_path, text, message):
    path = _write(tmp_path, text, "bad.csv")
    with pytest.raises(RecordingError, match=message) as err:
        read_csv(path)
    assert str(err.value).startswith(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(RecordingError, match=r"nope\.CSV: file not found"):
        open_recording(tmp_path / "nope.CSV")
