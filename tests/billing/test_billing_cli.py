"""`pm4324 bill` as a user runs it: files per tenant, the PDF rendered (pdftoppm) and read
(pdftotext), the summary on stdout, and one clear line for each bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
from decimal import Decimal

import pytest
from billing_month import HERE

from pm4324.cli.cli import main


@pytest.fixture(scope="module")
def billed(month, tmp_path_factory):
    out = tmp_path_factory.mktemp("invoices")
    code = main(["bill", "--period", "2026-10", "--tenants", str(HERE / "tenants.toml"),
                 "--history", month.store_path, "--out", str(out)])
    assert code == 0
    return out


def test_files_per_tenant_and_summary(billed, capsys):
    names = sorted(p.name for p in billed.iterdir())
    for tenant in ("apt1", "apt2", "shop"):
        for ext in ("csv", "json", "pdf"):
            assert f"{tenant}-2026-10.{ext}" in names
    assert "summary-2026-10.json" in names and "summary-2026-10.csv" in names
    inv = json.loads((billed / "shop-2026-10.json").read_text())
    amounts = [Decimal(x["amount"]) for x in inv["lines"]]
    assert sum(amounts) == Decimal(inv["total"])
    assert inv["hours"] == 745 and inv["currency"] == "EUR"
    energy = inv["lines"][0]
    assert energy["readings"][0] == {"meter": "test", "element": "meter2", "label": "Corner Shop",
                                     "register": "meter2_kwh_import_f32 (input 0x129A)",
                                     "value": "0.000", "unit": "kWh", "time": "2026-10-01T00:00+02:00"}
    assert energy["readings"][1]["time"] == "2026-11-01T00:00+01:00"
    rows = (billed / "shop-2026-10.csv").read_text().splitlines()
    assert rows[0].startswith("tenant,period,kind,text,quantity,unit,price,amount")
    assert rows[-1].split(",")[7] == inv["total"]
    summary = json.loads((billed / "summary-2026-10.json").read_text())["summary"]
    assert Decimal(summary["difference_kwh"]) == Decimal(summary["main_kwh"]) - Decimal(
        summary["assigned_kwh"])


def test_pdf_renders_and_reads(billed, tmp_path):
    if not (shutil.which("pdftoppm") and shutil.which("pdftotext")):
        pytest.skip("poppler-utils (pdftoppm, pdftotext) is not installed")
    pdf = billed / "shop-2026-10.pdf"
    subprocess.run(["pdftoppm", "-r", "50", "-png", "-f", "1", "-l", "1", str(pdf),
                    str(tmp_path / "page")], check=True, timeout=60)
    png = next(tmp_path.glob("page*.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True, timeout=60,
                          capture_output=True, text=True).stdout
    inv = json.loads((billed / "shop-2026-10.json").read_text())
    for needle in ("Corner Shop", "(745 h)", f"{inv['total']} EUR", "Energy, peak",
                   "Maximum 15-minute demand", "meter2_kwh_import_f32", "Load profile",
                   "counter reset at 2026-10-20 09:00", "no readings 2026-10-07 13:06"):
        assert needle in text, needle


BAD = [  # (text of the good file, replaced by, what the error line says)
    ('currency = "EUR"\nenergy = "flat"', 'energy = "flat"',
     "tariffs.home.currency = '': a 3-letter ISO 4217 code like EUR"),
    ('energy = "flat"', 'energy = "hourly"', "tariffs.home.energy = 'hourly': one of flat, blocks, tou"),
    ('price = "0.3050"', 'price = "0,3050"', "tariffs.home.price = '0,3050': a decimal number"),
    ('from = "08:00"', 'from = "08:10"',
     "tariffs.business.windows[0].from = '08:10': a local time HH:MM on a quarter hour"),
    ('"test:ct7"', '"test:ct25"', "tenants[1].circuits[0] = 'test:ct25': ct1..ct24 or meter1..meter8"),
    ("move_out = 2026-10-16", "move_out = 2026-10-16T10:05:00",
     "tenants[1].move_out = 2026-10-16T10:05:00: a time on a quarter hour"),
    ('split = "area"', 'split = "head count"',
     "common[0].split = 'head count': one of area, consumption, fixed"),
    ('time_zone = "Europe/Berlin"', 'time_zone = "Mars/Olympus"',
     "building.time_zone = 'Mars/Olympus': an IANA zone like Europe/Berlin"),
    ('tariff = "home"', 'tariff = "homes"', "tenants[1].tariff = 'homes': one of business, home"),
    ('area_m2 = 120', 'area_m2 = 120\nfloor = 2', "tenants[0].floor = 2: unknown key; allowed: address,"),
    ("holidays = [2026-10-03]", 'holiday_calendar = "none.ics"',
     "tariffs.business.holiday_calendar = 'none.ics': a readable .ics file (No such file or directory)"),
]


@pytest.mark.parametrize("old, new, message", BAD)
def test_bad_tenants_file_one_line(tmp_path, capsys, old, new, message):
    good = (HERE / "tenants.toml").read_text()
    assert old in good
    path = tmp_path / "bad.toml"
    path.write_text(good.replace(old, new, 1))
    code = main(["bill", "--period", "2026-10", "--tenants", str(path), "--history", "none.sqlite"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"pm4324 bill: {path}: {message}" + err[len(f"pm4324 bill: {path}: {message}"):]
    assert err.count("\n") == 1, err


def test_bad_period_and_missing_history(tmp_path, capsys):
    tenants = str(HERE / "tenants.toml")
    assert main(["bill", "--period", "2026-13", "--tenants", tenants, "--history", "x"]) == 2
    assert capsys.readouterr().err == "pm4324 bill: --period '2026-13': expected a month like 2026-11\n"
    assert main(["bill", "--period", "2026-10", "--tenants", tenants,
                 "--history", str(tmp_path / "none.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no history there" in err


def test_unknown_meter_key(month, tmp_path, capsys):
    path = tmp_path / "t.toml"
    path.write_text((HERE / "tenants.toml").read_text().replace("test:ct8", "hub-b:ct8"))
    assert main(["bill", "--period", "2026-10", "--tenants", str(path), "--history",
                 month.store_path, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'hub-b'" in err and "meters: test" in err, err
