"""`pm4324 analyze` on every real recording in ../shared/data/waveforms (skipped without it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pm4324.sources.recording import open_recording

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "replay"


def analyze(recording: Path, settings: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pm4324.cli.cli", "analyze", str(recording),
                           "--settings", str(settings), "--json"],
                          capture_output=True, text=True, timeout=120)


def _independent_power(v: np.ndarray, i: np.ndarray, fs: float, f: float) -> float:
    """Mean of v*i over the largest whole number of nominal cycles (a crude but independent P)."""
    n = int(np.floor(len(v) / (fs / f)) * fs / f)
    return float(np.mean(v[:n] * i[:n]))


@pytest.mark.parametrize("rel, cfg, columns, f", [
    ("ieeecomtrade_keating_1999/keating_1999.CFG", "keating_1999.toml",
     [("U1", "I1"), ("U2", "I2"), ("U3", "I3")], 60.0),
    ("mhkit_modaq_3ph/2020224_181521_PowRaw.csv", "mhkit_modaq_3ph.toml",
     [("MODAQ_Va_V", "MODAQ_Ia_I"), ("MODAQ_Vb_V", "MODAQ_Ib_I"), ("MODAQ_Vc_V", "MODAQ_Ic_I")],
     60.0),
])
def test_real_recordings_agree_with_an_independent_estimate(shared_data, rel, cfg, columns, f):
    path = shared_data / "waveforms" / rel
    r = analyze(path, EXAMPLES / cfg)
    assert r.returncode == 0, r.stderr
    readings = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(readings) == 1  # both are shorter than a second: one reading
    rec = open_recording(path)
    for k, (vc, ic) in enumerate(columns):
        v = rec.data[rec.channels.index(vc)]
        i = rec.data[rec.channels.index(ic)]
        p = _independent_power(v, i, rec.sample_rate_hz, f)
        ct = readings[0]["cts"][k]
        # event recordings are not stationary: whole-cycle windows differ by a few percent
        assert ct["p_w"] == pytest.approx(p, rel=0.05)
        assert ct["v_rms"] == pytest.approx(np.sqrt(np.mean(v**2)), rel=0.02)
    assert readings[0]["meters"][0]["frequency_hz"] == pytest.approx(60.0, abs=0.1)


@pytest.mark.parametrize("name", ["sample_ascii.cfg", "sample_bin.cfg", "sample_ascii.cff"])
def test_parser_fixtures_are_read(shared_data, name):
    """Two-cycle parser fixtures: read without error; a reading or one clear message."""
    cfg = {"sample_ascii.cfg": "python_comtrade_sample_ascii.toml",
           "sample_bin.cfg": "python_comtrade_sample_bin.toml",
           "sample_ascii.cff": "python_comtrade_sample_cff.toml"}[name]
    r = analyze(shared_data / "waveforms" / "python_comtrade_samples" / name, EXAMPLES / cfg)
    assert "Traceback" not in r.stderr
    if r.returncode == 0:
        assert json.loads(r.stdout.splitlines()[0])["cts"]
    else:
        assert r.returncode == 2 and "no whole cycle" in r.stderr


def test_truncated_recording_is_a_clear_error(shared_data, tmp_path):
    src = shared_data / "waveforms" / "ieeecomtrade_keating_1999"
    (tmp_path / "k.cfg").write_bytes((src / "keating_1999.CFG").read_bytes())
    (tmp_path / "k.dat").write_bytes((src / "keating_1999.DAT").read_bytes()[:5000])
    r = analyze(tmp_path / "k.cfg", EXAMPLES / "keating_1999.toml")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "k." in r.stderr
