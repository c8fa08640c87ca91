"""What a CT reads at currents below the anti-creep threshold and the starting current
(docs/metering.md, docs/json.md), against closed-form signals.

Rated current In = 1 A secondary (CT ratio 100). Anti-creep threshold 0.04 % In: below it
an element adds no energy, and P = Q = S = PF = 0 exactly (I and V still read true RMS).
Starting current Ist = 0.1 % In (class 0.2S): THD_I reads 0 below it, the true THD above.
"""

from __future__ import annotations

import numpy as np

from pm4324.config.settings import MainSettings, MeterSettings, Settings, Wiring, validate

from .signals import Scenario, load, run, three_phase

UN = 230.0
FIFTH = 0.10  # 5th harmonic, 10 % of the fundamental: THD_I = 10 %
LEVELS = (0.0003, 0.0008, 0.0015)  # x In: below anti-creep, between, above Ist
WIRINGS = (Wiring.W3P4W_3CT, Wiring.W3P4W_3CT, Wiring.W3P4W_3CT, Wiring.W3P3W_2CT)


def _run():
    settings = Settings(
        model="PM-4324", sample_rate_hz=12800.0,
        mains=(MainSettings(nominal_voltage_v=UN),),
        meters=tuple(MeterSettings(wiring=w, ct_ratio=100.0) for w in WIRINGS)
        + tuple(MeterSettings(ct_ratio=100.0) for _ in range(4)),
    )
    validate(settings)
    amps1, amps5 = np.zeros(24, dtype=complex), np.zeros(24, dtype=complex)
    for j, level in enumerate((*LEVELS, LEVELS[0])):
        amps1[3 * j : 3 * j + 3] = load(level, 60.0)  # PF 0.5 inductive
        amps5[3 * j : 3 * j + 3] = three_phase(FIFTH * level, order=5)
    sc = Scenario(settings=settings, freq=(50.0,), volts=({1: three_phase(UN)},),
                  amps={1: amps1, 5: amps5}, blocks=(12800,) * 4)
    return run(sc)


RUN = _run()
STEADY = slice(1, None)  # the first second starts at the first crossing


def _ct(key: str, meter: int) -> np.ndarray:
    return RUN.ct[key][STEADY][:, 3 * meter : 3 * meter + 3]


def test_below_anti_creep_p_q_s_pf_read_exactly_zero():
    true_i = 100.0 * LEVELS[0] * np.sqrt(1 + FIFTH**2)
    np.testing.assert_allclose(_ct("i_rms", 0), true_i, rtol=1e-4)
    np.testing.assert_allclose(_ct("v_rms", 0), UN, rtol=1e-6)
    for key in ("p_w", "q_var", "s_va", "pf"):
        values = _ct(key, 0)
        assert np.all(values == 0) and not np.signbit(values).any(), (key, values)
    for key in ("p_w", "q_var", "s_va", "s_arith_va", "s_vector_va", "pf"):
        for meter in (0, 3):  # 3P4W and Aron (S from line voltages and the derived I_b)
            assert np.all(RUN.meter[key][STEADY][:, meter] == 0), (key, meter)
    assert np.all(RUN.ct_energy[:, :3] == 0) and np.all(RUN.meter_energy[:, 0] == 0)


def test_above_anti_creep_powers_are_measured():
    level = LEVELS[1]
    p = UN * 100.0 * level * 0.5
    np.testing.assert_allclose(_ct("p_w", 1), p, rtol=1e-4)
    np.testing.assert_allclose(_ct("q_var", 1), p * np.sqrt(3), rtol=1e-4)
    np.testing.assert_allclose(_ct("pf", 1), 0.5 / np.sqrt(1 + FIFTH**2), rtol=1e-4)


def test_thd_i_is_zero_below_the_starting_current_and_true_above():
    assert np.all(_ct("thd_i_pct", 0) == 0)
    assert np.all(_ct("thd_i_pct", 1) == 0)  # 0.08 % In: above anti-creep, below Ist
    np.testing.assert_allclose(_ct("thd_i_pct", 2), FIFTH * 100, atol=0.05)
