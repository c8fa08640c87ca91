"""The engine hands out the samples of each step's last whole cycles (the web's waveform view)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from pm4324.config.settings import MainSettings, MeterSettings, Settings
from pm4324.metering.engine import WAVE_CYCLES, Engine

FS, F = 12800.0, 50.0


def test_last_cycles_are_the_input_samples_in_primary_units():
    settings = replace(Settings(model="PM-4324"), mains=(MainSettings(pt_ratio=2.0,
                       nominal_voltage_v=460.0),), meters=(MeterSettings(ct_ratio=50.0),) * 8)
    n = int(FS)
    t = np.arange(n) / FS
    angles = np.deg2rad([0.0, -120.0, 120.0])
    v = 230 * np.sqrt(2) * np.sin(2 * np.pi * F * t[None, :] + angles[:, None])
    i = np.tile(0.5 * np.sqrt(2) * np.sin(2 * np.pi * F * t[None, :] + angles[:, None] - 0.3), (8, 1))
    engine = Engine(settings)
    result = engine.step(v, i, 0)
    (wave,) = result.waveforms
    assert wave.shape[0] == 3 + 24
    per_cycle = FS / F
    assert abs(wave.shape[1] - WAVE_CYCLES * per_cycle) <= 1
    # the samples are a whole number of cycles: their RMS is the sinusoid's, exactly scaled
    np.testing.assert_allclose(np.sqrt(np.mean(wave[:3] ** 2, axis=1)), 460.0, rtol=2e-3)
    np.testing.assert_allclose(np.sqrt(np.mean(wave[3:] ** 2, axis=1)), 25.0, rtol=2e-3)
    # and they are the input's own samples, times the PT / CT ratio
    m = wave.shape[1]
    start = int(np.argmin([np.abs(2.0 * v[1, k:k + m] - wave[1]).max() for k in range(n - m)]))
    np.testing.assert_allclose(wave[:3], 2.0 * v[:, start:start + m], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(wave[3:], 50.0 * i[:, start:start + m], rtol=1e-9, atol=1e-9)
