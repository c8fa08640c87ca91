"""Harmonic angles (the `--harmonics` JSON output, docs/json.md) against closed-form signals.

The angle of order h of a channel is its phase in degrees, cosine convention, with the main's
phase-a voltage fundamental at 0: for x = sqrt2 X cos(h w t + a_h) and phase a's fundamental
at a_1, the angle reads a_h - h a_1. Off nominal (50.3 Hz, so the windows start anywhere in
the sample grid), with the phase-a voltage at 40 degrees in the signal's own time frame.
"""

from __future__ import annotations

import numpy as np
import pytest

from pm4324.config.settings import MainSettings, MeterSettings, Settings, validate
from pm4324.snapshot import harmonic_deg

from .signals import Scenario, load, run, three_phase

A1 = 40.0  # phase a's fundamental angle in the signal's frame
V5 = 5 * A1 + 25.0  # 5th of va at +25 degrees relative
I3 = 3 * A1 + 70.0  # 3rd of the currents at +70 degrees relative
LAG = 30.0  # the fundamental current lags its voltage by 30 degrees


def _wrap(deg: np.ndarray) -> np.ndarray:
    return (np.asarray(deg) + 180.0) % 360.0 - 180.0


@pytest.fixture(scope="module")
def r():
    settings = Settings(model="PM-4324", sample_rate_hz=12800.0, mains=(MainSettings(),),
                        meters=tuple(MeterSettings(ct_ratio=100.0) for _ in range(8)))
    validate(settings)
    volts = {1: three_phase(230.0, deg=A1), 5: three_phase(10.0, deg=V5, order=5)}
    angles = (A1, A1 - 120.0, A1 + 120.0)
    amps = {1: np.r_[load(1.0, LAG, angles), np.zeros(21)],
            3: np.r_[three_phase(0.1, deg=I3, order=3), np.zeros(21)]}
    return run(Scenario(settings=settings, freq=(50.3,), volts=(volts,), amps=amps,
                        blocks=(12800,) * 3), harmonic_angles=True)


def test_voltage_angles(r):
    deg = harmonic_deg(r.main["v_harmonic_phasors"][1:, 0])  # steady seconds, main 1: (steps, phase, order)
    np.testing.assert_allclose(deg[:, :, 1], np.broadcast_to([0.0, -120.0, 120.0], (2, 3)),
                               atol=1e-3)
    # order 5 of a positive-sequence set: phase b at -5 x 120 = +120 (mod 360) from phase a
    np.testing.assert_allclose(_wrap(deg[:, :, 5] - [25.0, 25.0 + 120.0, 25.0 - 120.0]), 0,
                               atol=1e-3)
    np.testing.assert_allclose(r.main["v_harmonics"][1:, 0, :, 5], 10.0, rtol=1e-5)


def test_current_angles(r):
    deg = harmonic_deg(r.ct["i_harmonic_phasors"][1:, :3])  # CTs 1-3
    np.testing.assert_allclose(_wrap(deg[:, :, 1] - [-LAG, -LAG - 120.0, -LAG + 120.0]), 0,
                               atol=1e-3)
    np.testing.assert_allclose(deg[:, :, 3], 70.0, atol=1e-3)  # the 3rd: zero sequence
    np.testing.assert_allclose(r.ct["i_harmonics"][1:, :3, 3], 10.0, rtol=1e-5)


def test_unused_inputs_and_absent_orders_have_no_angle(r):
    deg = harmonic_deg(r.ct["i_harmonic_phasors"][1:, 3:])  # CTs 4-24 carry no current at all
    assert np.isnan(deg).all()
