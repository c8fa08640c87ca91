"""The shipped ADC plug-in builds and installs as docs/adc-plugins.md says, in the project's
own environment (`make setup`'s venv), and `run --source demo-adc` then finds it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "adc_plugin"


def test_plugin_builds_with_the_venvs_own_setuptools_and_runs(tmp_path):
    # --no-build-isolation: what `pip install -e` meets when the index is out of reach; with
    # the venv's bare setuptools this failed with "invalid command 'bdist_wheel'"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "--wheel-dir", str(tmp_path / "dist"),
                            str(EXAMPLE)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (tmp_path / "dist").glob("pm4324_demo_adc-*.whl")
    with zipfile.ZipFile(wheel) as z:
        points = next(n for n in z.namelist() if n.endswith("entry_points.txt"))
        assert "demo-adc = pm4324_demo_adc:DemoAdcSource" in z.read(points).decode()
        z.extractall(tmp_path / "site")  # installed, for this process only
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    settings = tmp_path / "s.toml"
    settings.write_text("")
    r = subprocess.run([sys.executable, "-m", "pm4324.cli.cli", "run", "--source", "demo-adc",
                        "--settings", str(settings), "--seconds", "2", "--speed", "20",
                        "--no-modbus", "--json", "--meter", "1"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    import json

    last = json.loads(r.stdout.splitlines()[-1])
    assert last["cts"][0]["i_rms"] == pytest.approx(50.0, rel=1e-5)  # 0.5 A x CT ratio 100
