"""What a newcomer meets first: --version, clear one-line errors, a valid example file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from peers import pm4324
from pm4324.config.settings_parse import load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_SETTINGS = ROOT / "src/pm4324/data/building-settings.toml"


def test_version():
    from importlib.metadata import version

    r = pm4324("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"pm4324 {version('pm4324')}"


@pytest.mark.parametrize("at", ["nan", "inf", "-1"])
def test_expected_at_not_a_time(at):
    r = pm4324("expected", "--at", at)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"argument --at: '{at}': give a time from 0 seconds on" in r.stderr


@pytest.mark.parametrize("option, what", [("--settings", "settings file"),
                                          ("--scenario", "scenario file")])
def test_file_errors_are_plain_sentences(tmp_path, option, what):
    missing = tmp_path / "missing.toml"
    bad = tmp_path / "bad.toml"
    bad.write_text("x = \n")
    cases = {
        str(missing): f"{what} {missing} does not exist: check the path given to {option}",
        str(tmp_path): f"{what} {tmp_path} is a directory: give {option} the path of a TOML file",
        str(bad): f"{what} {bad} is not valid TOML (Invalid value (at line 1, column 5)): "
                  "fix that line",
    }
    for path, line in cases.items():
        r = pm4324("run", option, path, "--seconds", "1", "--no-modbus")
        assert r.returncode == 2 and r.stderr == f"pm4324: error: {line}\n"


def test_unknown_source_says_none_is_installed():
    r = pm4324("run", "--source", "nope", "--seconds", "1", "--no-modbus")
    assert r.returncode == 2
    assert r.stderr == ("pm4324: error: --source nope: no sample source of that name; no ADC "
                        "plug-in is installed (docs/adc-plugins.md says how to install one)\n")


def test_scenario_with_an_unknown_main_is_refused(tmp_path):
    f = tmp_path / "sc.toml"
    f.write_text("[mains.3]\nvoltage_v = 230\n")
    r = pm4324("expected", "--scenario", str(f))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "mains.3 = {'voltage_v': 230}: is not a known scenario key; known: 1, 2" in r.stderr


def test_every_commented_example_in_the_settings_file_is_valid_toml(tmp_path):
    """Uncommenting the examples (calibration, relays, alarms, store) gives a valid file."""
    text = EXAMPLE_SETTINGS.read_text(encoding="utf-8")
    example = re.compile(r"^# (\[\[?[\w.]+\]\]?(\s+#.*)?|\w+ = .*)$")
    lines = [line[2:] if example.match(line) else line for line in text.splitlines()]
    f = tmp_path / "s.toml"
    f.write_text("\n".join(lines) + "\n")
    s = load_settings(f)
    assert s.calibration_i[6].gain == 1.002 and s.calibration_v[0].phase_deg == 0.0
    assert s.relays.relays[0].mode == "alarm" and s.alarms[0].threshold == 25.0


def test_analyze_shows_no_relay_states(tmp_path):
    """A replay drives no relays: neither the table nor JSON claims a relay state."""
    fs, f = 5000, 50.0
    t = np.arange(int(fs * 1.2)) / fs
    v = 325.27 * np.sin(2 * np.pi * f * t)
    rows = "\n".join(f"{a!r},{b!r},{b / 325.27!r}" for a, b in zip(t.tolist(), v.tolist(),
                                                                    strict=True))
    rec = tmp_path / "rec.csv"
    rec.write_text("time,Va,Ia\n" + rows + "\n")
    settings = tmp_path / "s.toml"
    settings.write_text('model = "PM-4324"\n[replay.inputs]\nV1a = "Va"\nCT1 = "Ia"\n')
    table = pm4324("analyze", str(rec), "--settings", str(settings))
    assert table.returncode == 0, table.stderr
    assert "second 0" in table.stdout and "R1" not in table.stdout
    as_json = pm4324("analyze", str(rec), "--settings", str(settings), "--json")
    assert json.loads(as_json.stdout.splitlines()[0])["relays"] == []


def test_every_tcp_option_has_the_same_default_port():
    from pm4324.cli.cli import build_parser

    parser = build_parser()
    read = parser.parse_args(["read", "--tcp", "192.0.2.7"])
    reset = parser.parse_args(["reset-energy", "--all", "--tcp", "192.0.2.7"])
    assert read.tcp == reset.tcp == ("192.0.2.7", 502)
    helps = [pm4324(cmd, "--help").stdout for cmd in ("read", "reset-energy")]
    assert all("port 502, the Modbus standard, if not given; the software meter listens on"
               in " ".join(h.split()) for h in helps)


def test_every_doc_the_code_and_readme_point_to_exists():
    """sources/registry.py pointed at a docs/adc-plugins.md that did not exist."""
    texts = [p.read_text(encoding="utf-8") for p in (ROOT / "src").rglob("*.py")]
    texts.append((ROOT / "README.md").read_text(encoding="utf-8"))
    named = {m for t in texts for m in re.findall(r"docs/[\w.-]+\.(?:md|eds|json)", t)}
    assert "docs/adc-plugins.md" in named
    assert [d for d in sorted(named) if not (ROOT / d).exists()] == []
