"""Time stamps and the cycles of short recordings, against the closed form of a replayed sine.

A recording of a pure 3-phase sine replayed through the real ``Meter``: its time stamps must
be the duration of the samples read so far (exact where a second is not a whole number of
samples, 7812.5 S/s), the last partial report stamped by its real length, and a recording
shorter than a second must give one reading over every whole cycle it holds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pm4324.config.settings_parse import parse_settings
from pm4324.device.meter import Meter
from pm4324.sources.recording import Recording
from pm4324.sources.replay import ReplaySource


def _sine_recording(fs: float, n: int, f: float = 50.0, rms: float = 230.0,
                    crossing_s: float = 0.0) -> Recording:
    """Va, Vb, Vc of a balanced set whose Va rises through zero at ``crossing_s``."""
    t = np.arange(n) / fs - crossing_s
    phases = np.array([0.0, -2 * math.pi / 3, 2 * math.pi / 3])
    data = rms * math.sqrt(2) * np.sin(2 * math.pi * f * t[None, :] + phases[:, None])
    return Recording("sine.csv", ("Va", "Vb", "Vc"), ("V",) * 3, data, fs, f, None)


def _meter(rec: Recording, nominal_hz: float = 50.0) -> Meter:
    settings = parse_settings({
        "model": "PM-4324", "sample_rate_hz": rec.sample_rate_hz,
        "mains": {"1": {"nominal_voltage_v": 230, "nominal_frequency_hz": nominal_hz}},
        "replay": {"primary": True, "inputs": {"V1a": "Va", "V1b": "Vb", "V1c": "Vc"}},
    }, "timing.toml")
    return Meter(settings, ReplaySource(rec, settings), start_time=1000.0)


def _snapshots(meter: Meter) -> list:
    out = []
    while (snap := meter.step()) is not None:
        out.append(snap)
        assert len(out) < 100
    return out


def test_stamps_follow_the_sample_count_at_7812p5_samples_per_second():
    fs = 7812.5
    snaps = _snapshots(_meter(_sine_recording(fs, int(40 * fs))))
    assert len(snaps) == 40
    # second k ends after round((k + 1) * fs) samples; its stamp is exactly that duration
    stamps = np.array([s.time for s in snaps]) - 1000.0
    expected = np.array([round((k + 1) * fs) for k in range(40)]) / fs
    np.testing.assert_allclose(stamps, expected, rtol=0, atol=1e-9)
    assert abs(stamps - np.arange(1, 41)).max() <= 0.5 / fs + 1e-9
    assert stamps[-1] == pytest.approx(40.0, abs=1e-9)


def test_last_partial_report_is_stamped_by_its_length():
    fs = 12800.0
    snaps = _snapshots(_meter(_sine_recording(fs, int(2.5 * fs))))
    assert [round(s.time - 1000.0, 9) for s in snaps] == [1.0, 2.0, 2.5]


def test_a_short_recording_reports_every_whole_cycle():
    # keating_1999's shape: 60 Hz at 30 707 S/s, 2048 samples = 4.0 cycles; the first rising
    # crossing of Va at 0.1 cycle, so the recording holds 3 whole cycles from it
    fs, f = 30707.0, 60.0
    rec = _sine_recording(fs, 2048, f=f, rms=347.0, crossing_s=0.1 / f)
    snaps = [s for s in _snapshots(_meter(rec, nominal_hz=60.0)) if s.duration_s > 0]
    assert len(snaps) == 1
    snap = snaps[0]
    assert snap.duration_s == pytest.approx(3 / f, rel=1e-6)
    assert snap.main.frequency_hz[0] == pytest.approx(f, rel=1e-6)
    np.testing.assert_allclose(snap.main.v_ln[0], 347.0, rtol=1e-5)
