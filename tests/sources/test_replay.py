"""ReplaySource: mapping recording columns onto meter inputs, scaling, block reading, and the
example settings files against their real recordings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pm4324.config.settings import ReplayChannel, ReplaySettings
from pm4324.config.settings_parse import load_settings, parse_settings
from pm4324.sources.base import N_CURRENTS
from pm4324.sources.recording import Recording, RecordingError, open_recording
from pm4324.sources.replay import ReplaySource

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "replay"
#: each example settings file and the shared recording it is written for
EXAMPLE_RECORDINGS = {
    "keating_1999.toml": "ieeecomtrade_keating_1999/keating_1999.CFG",
    "mhkit_modaq_3ph.toml": "mhkit_modaq_3ph/2020224_181521_PowRaw.csv",
    "python_comtrade_sample_ascii.toml": "python_comtrade_samples/sample_ascii.cfg",
    "python_comtrade_sample_bin.toml": "python_comtrade_samples/sample_bin.cfg",
    "python_comtrade_sample_cff.toml": "python_comtrade_samples/sample_ascii.cff",
}


def _recording(n: int = 25) -> Recording:
    k = np.arange(n, dtype=float)
    data = np.vstack([1000 + k, 2000 + k, 3000 + k, 10 + k, 20 + k, 30 + k])
    return Recording("mem.csv", ("Va", "Vb", "Vc", "Ia", "Ib", "Ic"), ("",) * 6, data,
                     4000.0, 50.0, None)


def _settings(model: str = "PM-4324", primary: bool = True, **inputs):
    table = {
        "model": model,
        "mains": {"1": {"pt_ratio": 10.0, "nominal_voltage_v": 2300}},
        "meters": {"1": {"ct_ratio": 50}, "2": {"ct_type_a": 200}},
        "replay": {"primary": primary, "inputs": inputs},
    }
    if model == "PM-4324A":
        table["mains"]["2"] = {"pt_ratio": 4.0, "nominal_voltage_v": 400}
    return parse_settings(table, "test.toml")


def _read_all(src: ReplaySource, n: int):
    blocks = []
    while (block := src.read(n)) is not None:
        blocks.append(block)
    return blocks


def test_mapping_and_primary_to_terminal_scaling():
    rec = _recording()
    s = _settings(V1a="Va", V1c={"channel": "Vc", "scale": 2.0}, CT1="Ia", CT4="Ib",
                  CT5={"channel": "Ic", "scale": -1.0})
    src = ReplaySource(rec, s)
    assert src.sample_rate_hz == 4000.0 and src.n_mains == 1 and src.realtime is False
    block = src.read(100)
    assert block.n == 25 and block.voltages.shape == (3, 25)
    assert block.currents.shape == (N_CURRENTS, 25)
    np.testing.assert_allclose(block.voltages[0], rec.data[0] / 10)
    np.testing.assert_array_equal(block.voltages[1], 0)  # unmapped
    np.testing.assert_allclose(block.voltages[2], rec.data[2] * 2 / 10)
    np.testing.assert_allclose(block.currents[0], rec.data[3] / 50)  # Meter 1
    np.testing.assert_allclose(block.currents[3], rec.data[4] / 200)  # Meter 2
    np.testing.assert_allclose(block.currents[4], -rec.data[5] / 200)
    assert not np.any(block.currents[[1, 2, 5, *range(6, 24)]])


def test_terminal_recordings_are_not_divided():
    rec = _recording()
    block = ReplaySource(rec, _settings(primary=False, V1b="Vb", CT2="Ia")).read(10)
    np.testing.assert_array_equal(block.voltages[1], rec.data[1, :10])
    np.testing.assert_array_equal(block.currents[1], rec.data[3, :10])


def test_second_main_uses_its_own_pt_ratio():
    rec = _recording()
    block = ReplaySource(rec, _settings("PM-4324A", V1a="Va", V2b="Vb")).read(5)
    assert block.voltages.shape == (6, 5)
    np.testing.assert_allclose(block.voltages[0], rec.data[0, :5] / 10)
    np.testing.assert_allclose(block.voltages[4], rec.data[1, :5] / 4)


def test_blocks_cover_the_recording_then_none():
    rec = _recording(25)
    src = ReplaySource(rec, _settings(V1a="Va"))
    blocks = _read_all(src, 7)
    assert [b.n for b in blocks] == [7, 7, 7, 4]
    assert [b.start for b in blocks] == [0, 7, 14, 21]
    assert sum(b.n for b in blocks) == rec.n_samples
    np.testing.assert_allclose(np.hstack([b.voltages[0] for b in blocks]), rec.data[0] / 10)
    assert src.read(7) is None


def test_nan_samples_pass_through():
    rec = _recording()
    rec.data[3, 4] = np.nan
    block = ReplaySource(rec, _settings(CT1="Ia")).read(10)
    assert np.isnan(block.currents[0, 4]) and np.isnan(block.currents).sum() == 1


def test_unknown_column_lists_the_columns():
    with pytest.raises(RecordingError, match=r"CT2 = 'I2', which is not a column .*"
                                             r"columns are: Va, Vb, Vc, Ia, Ib, Ic"):
        ReplaySource(_recording(), _settings(V1a="Va", CT2="I2"))


def test_empty_mapping_says_how_to_map():
    with pytest.raises(RecordingError, match=r"no meter input is mapped.*Va, Vb.*"
                                             r"\[replay\.inputs\], e\.g\. V1a = \"Va\""):
        ReplaySource(_recording(), _settings())


def test_inputs_the_model_lacks_are_refused():
    s = _settings(V1a="Va")
    s = replace(s, replay=ReplaySettings({"V2a": ReplayChannel("Va")}))
    with pytest.raises(RecordingError, match="V2a is not an input of the PM-4324"):
        ReplaySource(_recording(), s)


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.toml")) == sorted(EXAMPLE_RECORDINGS)


@pytest.mark.parametrize("example", sorted(EXAMPLE_RECORDINGS))
def test_example_settings_map_onto_their_recording(waveforms, example):
    settings = load_settings(EXAMPLES / example)
    rec = open_recording(waveforms / EXAMPLE_RECORDINGS[example])
    src = ReplaySource(rec, settings)
    blocks = _read_all(src, 1024)
    assert sum(b.n for b in blocks) == rec.n_samples
    v = np.hstack([b.voltages for b in blocks])
    i = np.hstack([b.currents for b in blocks])
    assert np.all(np.isfinite(v)) and np.all(np.isfinite(i))
    mapped_v = [k for k, name in enumerate(("V1a", "V1b", "V1c")) if name in
                settings.replay.inputs]
    vrms = np.sqrt(np.mean(v[mapped_v] ** 2, axis=1))
    nominal = settings.mains[0].nominal_voltage_v / settings.mains[0].pt_ratio
    if example in ("keating_1999.toml", "mhkit_modaq_3ph.toml"):
        # full cycles of real data: terminals near nominal, currents below rated (1.0 A)
        np.testing.assert_allclose(vrms, nominal, rtol=0.05)
        irms = np.sqrt(np.mean(i[:3] ** 2, axis=1))
        assert np.all((irms > 0.2) & (irms < 1.0))
    assert np.all(np.abs(v) < 500 * np.sqrt(2))
