"""`pm4324 analyze --json --harmonics` (docs/json.md) on a closed-form CSV recording.

3 kS/s at 50 Hz: orders 0..29 exist, 30..50 (at or above Nyquist) are null. Phase a's
voltage fundamental is the angle reference; the 5th of the voltage and the 3rd of the
current sit at known angles from it.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pm4324.cli.cli import main

FS, F = 3000.0, 49.9  # off nominal: the windows start anywhere in the sample grid
CT_RATIO = 50.0


@pytest.fixture
def files(tmp_path):
    t = np.arange(int(2.5 * FS)) / FS
    w = 2 * math.pi * F * t
    cols = {"t": t}
    for k, p in enumerate("abc"):
        shift = -2 * math.pi / 3 * k
        cols[f"V{p}"] = (230 * math.sqrt(2) * np.cos(w + shift)
                         + 11.5 * math.sqrt(2) * np.cos(5 * (w + shift) + math.radians(25)))
        cols[f"I{p}"] = (20 * math.sqrt(2) * np.cos(w + shift - math.radians(30))
                         + 4 * math.sqrt(2) * np.cos(3 * w + math.radians(70)))
    csv = tmp_path / "rec.csv"
    csv.write_text(",".join(cols) + "\n" + "\n".join(
        ",".join(f"{v:.9g}" for v in row) for row in zip(*cols.values())) + "\n")
    toml = tmp_path / "rec.toml"
    toml.write_text(f'model = "PM-4324"\nsample_rate_hz = {FS}\n[meters.1]\n'
                    f"ct_ratio = {CT_RATIO}\n[replay.inputs]\n"
                    'V1a = "Va"\nV1b = "Vb"\nV1c = "Vc"\nCT1 = "Ia"\nCT2 = "Ib"\nCT3 = "Ic"\n')
    return csv, toml


def test_json_carries_harmonic_rms_and_angles(files, capsys):
    csv, toml = files
    assert main(["analyze", str(csv), "--settings", str(toml), "--json", "--harmonics"]) == 0
    d = json.loads(capsys.readouterr().out.splitlines()[1])  # a whole second
    va, vb, _ = d["mains"][0]["v_harmonics"]
    assert (va["phase"], len(va["rms"]), len(va["deg"])) == ("a", 51, 51)
    assert va["rms"][1] == pytest.approx(230.0, rel=1e-4)
    assert va["rms"][5] == pytest.approx(11.5, rel=1e-3)
    assert va["deg"][1] == pytest.approx(0.0, abs=0.01)
    assert va["deg"][5] == pytest.approx(25.0, abs=0.05)
    assert vb["deg"][1] == pytest.approx(-120.0, abs=0.01)
    assert vb["deg"][5] == pytest.approx(25.0 + 120.0, abs=0.05)  # 5th: negative sequence
    ia = d["cts"][0]["i_harmonics"]
    assert ia["rms"][1] == pytest.approx(20.0, rel=1e-4)
    assert ia["deg"][1] == pytest.approx(-30.0, abs=0.01)
    assert ia["rms"][3] == pytest.approx(4.0, rel=1e-3)
    assert ia["deg"][3] == pytest.approx(70.0, abs=0.05)
    assert va["deg"][0] is None  # DC has no angle
    assert va["deg"][2] is None  # an order with nothing in it
    nyquist = math.ceil(FS / 2 / F)  # 31 here (30.06 x 49.9 Hz = 1500 Hz)
    assert all(x is None for x in va["rms"][nyquist:] + ia["deg"][nyquist:])
    assert all(x is not None for x in va["rms"][:nyquist])


def test_harmonics_without_json_is_one_line_and_exit_2(files, capsys):
    csv, toml = files
    assert main(["analyze", str(csv), "--settings", str(toml), "--harmonics"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--harmonics" in err[0] and "--json" in err[0]


def test_json_without_the_flag_has_no_harmonics(files, capsys):
    csv, toml = files
    assert main(["analyze", str(csv), "--settings", str(toml), "--json"]) == 0
    d = json.loads(capsys.readouterr().out.splitlines()[0])
    assert "v_harmonics" not in d["mains"][0] and "i_harmonics" not in d["cts"][0]
