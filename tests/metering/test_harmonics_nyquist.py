"""Harmonic orders with few samples per period (docs/metering.md, "Sample rates"), against
closed-form signals: every order below Nyquist reads its amplitude once the interpolation's
mean gain is divided out (uncorrected, order 27 at 3 kS/s read 36 % low and order 50 at
7812.5 S/s 17 % low), and the orders at or above Nyquist, whose bins hold only images of
the orders below it, read 0, so THD covers exactly the orders below Nyquist.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from pm4324.config.settings import MainSettings, MeterSettings, Settings, validate

from .signals import Scenario, load, run, three_phase

UN = 230.0
V_H, I_H = 0.02, 0.05  # each harmonic: 2 % of Un, 5 % of the fundamental current


@functools.cache
def _run(fs: float, f: float, orders: tuple[int, ...]):
    settings = Settings(
        model="PM-4324", sample_rate_hz=fs,
        mains=(MainSettings(nominal_voltage_v=UN, nominal_frequency_hz=round(f, -1)),),
        meters=tuple(MeterSettings(ct_ratio=100.0) for _ in range(8)),
    )
    validate(settings)
    amps = {1: np.r_[load(1.0, 30.0), np.zeros(21)]}
    volts = {1: three_phase(UN)}
    for h in orders:
        volts[h] = three_phase(V_H * UN, order=h)
        amps[h] = np.r_[three_phase(I_H, order=h), np.zeros(21)]
    return run(Scenario(settings=settings, freq=(f,), volts=(volts,), amps=amps,
                        blocks=(int(fs),) * 4))


CASES = {  # (fs, f, orders): the highest below Nyquist at w = 2.4 .. 3.0 rad/sample
    "3kS/s-49.7Hz": (3000.0, 49.7, (3, 11, 23, 27, 29)),
    "7812.5S/s-60Hz": (7812.5, 60.0, (5, 23, 45, 49, 50)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_orders_below_nyquist_read_their_amplitude(name):
    fs, f, orders = CASES[name]
    r = _run(fs, f, orders)
    ih = r.ct["i_harmonics"][1:, :3]  # steady seconds, CTs 1-3
    vh = r.ct["v_harmonics"][1:, :3]
    for h in orders:
        assert 2 * math.pi * h * f / fs < math.pi
        np.testing.assert_allclose(ih[..., h], I_H * 100.0, rtol=5e-3, err_msg=f"I{h}")
        np.testing.assert_allclose(vh[..., h], V_H * UN, rtol=5e-3, err_msg=f"V{h}")
    thd = math.sqrt(len(orders)) * I_H * 100.0
    np.testing.assert_allclose(r.ct["thd_i_pct"][1:, :3], thd, atol=0.01)
    np.testing.assert_allclose(r.ct["thd_v_pct"][1:, :3], thd * V_H / I_H, atol=0.01)


def test_orders_at_or_above_nyquist_read_zero():
    fs, f, orders = CASES["3kS/s-49.7Hz"]
    r = _run(fs, f, orders)
    first = math.ceil(fs / 2 / f)  # 31: the lowest order at or above Nyquist
    assert first == 31
    assert np.all(r.ct["i_harmonics"][1:, :3, first:] == 0)
    assert np.all(r.ct["v_harmonics"][1:, :3, first:] == 0)
