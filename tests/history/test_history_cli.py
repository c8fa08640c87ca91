"""`pm4324 history synth|energy|show|demand|export|stats|prune` against analytic truth:
the built-in building's constant HVAC and the shop's piecewise-linear daily profile give
every day's energy in closed form, DST days included, in two time zones."""

from __future__ import annotations

import csv
import io
import json
from datetime import date

import pytest

from pm4324.cli.cli import main
from pm4324.config.settings_parse import load_settings
from pm4324.sources.scenario_parse import load_scenario

SETTINGS = load_settings(None)  # the truth does not depend on the display settings
BUILDING = load_scenario(None)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def full_power(ct: int) -> float:
    """P of CT ``ct`` at level 1 (the scenario's own expected values at an instant)."""
    from pm4324.cli.cli import _default_settings_path

    rows = BUILDING.expected(load_settings(_default_settings_path()), 0.0)
    shop = next(ld for ld in BUILDING.loads if ct in ld.cts)
    level = shop.level(0.0) if shop.daily_profile else 1.0
    return rows[ct - 1]["p_w"] / level


def profile_hours(skip: int | None = None, twice: int | None = None) -> float:
    """Integral over a local day of the shop's hourly-interpolated profile, in level-hours."""
    prof = next(ld for ld in BUILDING.loads if ld.daily_profile).daily_profile
    hours = [(prof[h] + prof[(h + 1) % 24]) / 2 for h in range(24)]
    total = sum(hours) - (hours[skip] if skip is not None else 0)
    return total + (hours[twice] if twice is not None else 0)


@pytest.fixture
def synth(tmp_path, capsys):
    def make(zone: str, first: str, last: str) -> str:
        store = str(tmp_path / f"{zone.replace('/', '_')}.db")
        code, _, err = cli(capsys, "history", "synth", "--store", store, "--from", first, "--to",
                           last, "--time-zone", zone)
        assert code == 0, err
        return store
    return make


@pytest.mark.parametrize(("zone", "day", "skip", "twice"), [
    ("Europe/Berlin", "2026-03-29", 2, None), ("Europe/Berlin", "2026-10-25", None, 2),
    ("America/New_York", "2026-03-08", 2, None), ("America/New_York", "2026-11-01", None, 1),
])
def test_synth_dst_days_have_exact_energy(synth, capsys, zone, day, skip, twice):
    store = synth(zone, day, day)
    code, out, _ = cli(capsys, "history", "energy", "ct1", "--store", store, "--from", day,
                       "--to", str(date.fromisoformat(day).replace(day=date.fromisoformat(day).day + 1)),
                       "--json")
    (row,) = json.loads(out)
    hours = 23 if skip is not None else 25
    assert row["seconds"] == hours * 3600
    assert row["energy_wh"]["wh_import"] == pytest.approx(full_power(1) * hours, rel=1e-9)
    _, out, _ = cli(capsys, "history", "energy", "ct4", "--store", store, "--from", day, "--json")
    (row,) = json.loads(out)
    assert row["energy_wh"]["wh_import"] == pytest.approx(full_power(4) * profile_hours(skip, twice),
                                                         rel=1e-9)


def test_months_sum_days_and_demand_is_the_block_mean(synth, capsys):
    store = synth("Europe/Berlin", "2026-03-01", "2026-04-30")
    _, out, _ = cli(capsys, "history", "energy", "ct1", "--store", store, "--period", "month",
                    "--from", "2026-03-01", "--to", "2026-05-01", "--json")
    march, april = json.loads(out)
    assert march["seconds"] == (31 * 24 - 1) * 3600 and april["seconds"] == 30 * 24 * 3600
    assert march["energy_wh"]["wh_import"] == pytest.approx(full_power(1) * 743, rel=1e-9)
    assert march["last_wh"]["wh_import"] == pytest.approx(april["first_wh"]["wh_import"])
    code, out, _ = cli(capsys, "history", "demand", "ct4", "--store", store, "--period", "month")
    assert code == 0 and f"{full_power(4) / 1000:.3f}" in out  # the profile's flat top, 1.0
    code, out, _ = cli(capsys, "history", "stats", "--store", store, "--json")
    (m,) = json.loads(out)["meters"]
    assert m["key"] == "synth" and m["gaps"] == 0


def test_export_csv_json_parquet_agree(synth, capsys, tmp_path):
    store = synth("UTC", "2026-06-01", "2026-06-01")
    args = ["history", "export", "--store", store, "--from", "2026-06-01T10:00", "--to",
            "2026-06-01T11:00"]
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 4 * 34 and "136 rows exported" in err
    ct1 = [r for r in rows if r["element"] == "ct1"]
    assert float(ct1[0]["wh_import_wh"]) == pytest.approx(full_power(1) / 4, rel=1e-9)
    assert ct1[0]["seconds"] == "900" and rows[0]["time_utc"] == "2026-06-01T10:00:00Z"
    code, out, _ = cli(capsys, *args, "--format", "json", "--resolution", "1min")
    lines = [json.loads(x) for x in out.splitlines()]
    assert len(lines) == 60 * 34
    assert lines[0]["p_w_mean"] == pytest.approx(full_power(1), rel=1e-6)
    pq = pytest.importorskip("pyarrow.parquet")
    code, _, err = cli(capsys, *args, "--format", "parquet", "-o", str(tmp_path / "x.parquet"))
    table = pq.read_table(tmp_path / "x.parquet").to_pylist()
    assert [r["p_w_mean"] for r in table] == [float(r["p_w_mean"]) if r["p_w_mean"] else None
                                             for r in rows]


def test_bad_input_is_one_line_and_exit_2(synth, capsys, tmp_path):
    store = synth("UTC", "2026-06-01", "2026-06-01")
    for argv in (["show", "ct99"], ["show", "ct1", "banana"], ["energy", "main1"],
                 ["show", "ct1", "--from", "yesterday"], ["export", "--from", "2026-06-02",
                                                          "--to", "2026-06-01"],
                 ["synth", "--from", "2026-05-01", "--to", "2026-05-02"]):
        code, _, err = cli(capsys, "history", argv[0], "--store", store, *argv[1:])
        assert code == 2 and len(err.strip().splitlines()) == 1, (argv, err)
    code, _, err = cli(capsys, "history", "stats", "--store", str(tmp_path / "none.db"))
    assert code == 2 and "no history there" in err


def test_prune_deletes_what_is_older(synth, capsys):
    store = synth("UTC", "2026-06-01", "2026-06-03")
    code, out, _ = cli(capsys, "history", "prune", "--store", store, "--before", "2026-06-02")
    assert code == 0 and "96 interval rows" in out and "1 day rows" in out
    _, out, _ = cli(capsys, "history", "energy", "ct1", "--store", store, "--from", "2026-06-01",
                    "--to", "2026-06-04", "--json")
    assert [r["period"] for r in json.loads(out)] == ["2026-06-02", "2026-06-03"]
