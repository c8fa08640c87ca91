"""The PM-4324P variant (333 mV CTs, ``ct_input = "333mV"``, ours): settings validation, the
metering of a 333 mV input against the closed form, and the Modbus register view.

A 333 mV CT gives 0.333 V rms at its rated primary current (``ct_ratio``), so an input of
u volts reads u / 0.333 * ct_ratio amperes; calibration, anti-creep (0.04 % of rated) and the
starting current (0.1 % of rated) are fractions of that rated current as with clip-on CTs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pm4324.config.settings import SettingsError
from pm4324.config.settings_file import settings_to_toml
from pm4324.config.settings_parse import parse_settings
from pm4324.device.meter import Meter
from pm4324.registers.codecs import decode
from pm4324.registers.image import MapBackend
from pm4324.sources.recording import Recording
from pm4324.sources.replay import ReplaySource

FS, F, UN = 12800.0, 50.0, 230.0
RATED_A = 250.0  # a 250 A : 333 mV CT
# CT input rms volts of Meter 1's CTs and Meter 2's CT a: 1/2 rated, rated x 1.01 calibrated,
# rated, below anti-creep (0.03 % of rated)
INPUTS_V = (0.1665, 0.333, 0.333, 0.333 * 0.0003)
PHI = math.radians(30.0)  # current lags the voltage by 30 degrees


def _table(**extra) -> dict:
    table = {
        "model": "PM-4324", "ct_input": "333mV",
        "mains": {"1": {"nominal_voltage_v": UN}},
        "meters": {"1": {"ct_ratio": RATED_A}, "2": {"ct_ratio": RATED_A}},
        "calibration": {"current": {"2": {"gain": 1.01}}},
        "replay": {"primary": False, "inputs": {
            "V1a": "Va", "V1b": "Vb", "V1c": "Vc",
            **{f"CT{k + 1}": f"I{k + 1}" for k in range(len(INPUTS_V))}}},
    }
    table.update(extra)
    return table


def _recording() -> Recording:
    t = np.arange(int(3 * FS)) / FS
    shift = (0.0, -2 * math.pi / 3, 2 * math.pi / 3, 0.0)
    volts = [UN * math.sqrt(2) * np.sin(2 * math.pi * F * t + s) for s in shift[:3]]
    amps = [u * math.sqrt(2) * np.sin(2 * math.pi * F * t + s - PHI)
            for u, s in zip(INPUTS_V, shift)]
    names = ("Va", "Vb", "Vc") + tuple(f"I{k + 1}" for k in range(len(INPUTS_V)))
    return Recording("p.csv", names, ("V",) * len(names), np.array(volts + amps), FS, F, None)


@pytest.fixture(scope="module")
def meter() -> Meter:
    settings = parse_settings(_table(), "pm4324p.toml")
    m = Meter(settings, ReplaySource(_recording(), settings), start_time=0.0)
    while m.step() is not None:
        assert m.seq < 10
    return m


def test_333mv_input_reads_the_rated_primary_current(meter):
    ct = meter.snapshot.ct
    expected_i = np.array(INPUTS_V) / 0.333 * RATED_A * np.array([1.0, 1.01, 1.0, 1.0])
    np.testing.assert_allclose(ct.i_rms[:4], expected_i, rtol=1e-5)
    np.testing.assert_allclose(ct.p_w[:3], UN * expected_i[:3] * math.cos(PHI), rtol=1e-5)
    np.testing.assert_allclose(ct.q_var[:3], UN * expected_i[:3] * math.sin(PHI), rtol=1e-5)


def test_anti_creep_is_a_fraction_of_the_rated_current(meter):
    ct = meter.snapshot.ct
    assert ct.p_w[3] == ct.q_var[3] == ct.s_va[3] == ct.pf[3] == 0.0
    assert meter.ct_registers.energies().wh_import[3] == 0.0
    assert meter.ct_registers.energies().wh_import[0] > 0.0


def test_register_view_serves_the_input_type(meter):
    backend = MapBackend(meter)
    point = backend.register_map.by_name["ct_input_type"]
    assert decode(point.type, backend.read_registers(point.table, point.address, 1),
                  "low-first") == 1
    clip_on = parse_settings({"model": "PM-4324"}, "clip-on.toml")
    assert clip_on.ct_input == "clip-on"


def test_settings_validation_and_write_back():
    with pytest.raises(SettingsError, match='ct_input = .*must be one of clip-on, 333mV'):
        parse_settings(_table(ct_input="1V"), "bad.toml")
    with pytest.raises(SettingsError, match="ct_type_a = 200: names a factory clip-on CT"):
        parse_settings(_table(meters={"1": {"ct_type_a": 200}}), "bad.toml")
    written = settings_to_toml(parse_settings(_table(), "p.toml"))
    assert 'ct_input = "333mV"' in written
