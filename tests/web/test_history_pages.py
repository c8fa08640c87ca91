"""The Trends page drawn from the history (Debian's chromium, Playwright): energy per day and
per month, 15-minute demand with its maximum and the long trend show the values the API
answers for a store with known energies; the Building page's Today column equals the API's
and the meter's own counters."""

from __future__ import annotations

import httpx
import pytest
from history_fixture import FIRST, GAP, LAST, day_wh, write_site

from pm4324.history import HistoryStore
from pm4324.web.server import WebServer


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A hub's server with a history and no live second: "site" complete, "hubbed" with a
    gap of 105 minutes."""
    path = str(tmp_path_factory.mktemp("history") / "site.db")
    write_site(path).close()
    write_site(path, key="hubbed", skip_gap=True).close()
    web = WebServer(None, "127.0.0.1", 0, keys=["site", "hubbed"],
                    history=HistoryStore.open(path, readonly=True))
    web.start_in_thread()
    yield web
    web.stop_thread()


def raw(page, selector: str, attribute: str = "data-raw") -> float:
    return float(page.get_attribute(selector, attribute))


def test_trends_show_the_historys_energy_demand_and_trend(page, site):
    with httpx.Client(base_url=site.url.rstrip("/"), timeout=30) as http:
        span = http.get("/api/history/span").json()
        end = int(span["last"] + 900)
        days = http.get("/api/history/energy", params={"element": "meter1"}).json()["rows"]
        months = http.get("/api/history/energy",
                          params={"element": "meter1", "period": "month"}).json()["rows"]
        demand = http.get("/api/history/demand", params={"element": "meter1", "start": end - 86400,
                                                         "end": end}).json()
        trend = http.get("/api/history/trend", params={"element": "meter1", "quantity": "p_w", "points": 1200,
                                                       "start": end - 86400, "end": end}).json()
    page.goto(site.url + "trends")
    page.wait_for_selector("#content[data-ready='1']", timeout=20_000)
    bars = page.locator("#energy-day rect[data-key]")
    assert bars.count() == len(days) == 4
    for k, row in enumerate(days):
        assert bars.nth(k).get_attribute("data-key") == row["period"]
        assert float(bars.nth(k).get_attribute("data-raw")) == row["energy"]["wh_import"]
        assert row["energy"]["wh_import"] == pytest.approx(day_wh(FIRST.fromisoformat(row["period"])))
    assert raw(page, '#energy-month rect[data-key="2026-03"]') == months[0]["energy"]["wh_import"]
    assert page.locator("#demand rect[data-key]").count() == len(demand["t"]) == 96
    assert raw(page, "#max-kw") == demand["max"]["kw"]
    assert raw(page, "#max-kw", "data-at") == demand["max"]["at"]
    assert page.locator("#demand rect.max").get_attribute("data-key") == str(int(demand["max"]["at"]))
    assert int(page.get_attribute("#trend svg", "data-points")) == len(trend["t"])
    assert raw(page, "#trend-max") == max(x for x in trend["max"] if x is not None)
    means = [x for x in trend["mean"] if x is not None]
    assert raw(page, "#trend-mean") == pytest.approx(sum(means) / len(means), rel=1e-12)
    assert "kWh" in page.inner_text("#energy-day") and "kW" in page.inner_text("#demand-max")
    page.select_option("#trend-element", "ct1")  # another circuit: its own energy
    page.wait_for_function("document.querySelector('#energy-day rect').dataset.raw < 10000", timeout=10_000)
    assert raw(page, f'#energy-day rect[data-key="{LAST}"]') == pytest.approx(day_wh(LAST) / 3, rel=1e-9)
    page.select_option("#trend-range", str(366 * 86400))  # a year, from the 1-minute blocks
    page.wait_for_selector(f"#trend[data-span='{366 * 86400}'] svg", timeout=10_000)
    assert "1-minute history" in page.inner_text("#trend-info")
    assert page.errors == []


def test_the_hubs_building_page_lists_each_meters_gaps(page, site):
    with httpx.Client(base_url=site.url.rstrip("/"), timeout=30) as http:
        summary = {x["device"]: x for x in http.get("/api/history/gap-summary").json()}
    assert summary["site"]["gaps"] == 0 and summary["hubbed"]["gaps"] == 1
    assert summary["hubbed"]["missing_s"] == GAP[1] - (GAP[0] - 1) and summary["hubbed"]["last_end"] == GAP[1]
    page.goto(site.url)  # no live second from either meter: the list shows all the same
    row = page.locator("#fleet tr[data-device='hubbed'] [data-gaps]")
    row.wait_for(timeout=10_000)
    assert row.get_attribute("data-gaps") == "1"
    assert float(row.get_attribute("data-missing")) == GAP[1] - GAP[0] + 1
    assert row.inner_text() == "1 · 1.8 h missing"
    assert page.inner_text("#fleet tr[data-device='site'] [data-gaps]") == "none"
    assert "offline" in page.inner_text("#fleet tr[data-device='hubbed']")
    page.goto(site.url + "?device=hubbed")  # a meter with no second yet: said, and no error
    page.wait_for_function("document.querySelector('#live').textContent.includes('no second yet')",
                           timeout=10_000)
    assert page.errors == []


def test_building_shows_todays_energy(page, live):
    live.step(61)  # a whole minute: the history has written today's first energy
    snap = live.step()
    page.goto(live.url)
    page.wait_for_selector(f'#live[data-seq="{snap.seq}"]', timeout=10_000)
    with live.http() as http:
        rows = http.get("/api/history/today").json()["rows"]
    today = {r["element"]: r["energy"]["wh_import"] for r in rows}
    for key in ("meter1", "meter8", "ct1", "ct24"):
        assert raw(page, f'[data-key="{key}.today_wh"]') == today[key]
    counted = float(snap.meter_energy.wh_import[0] - live.first.meter_energy.wh_import[0])
    assert today["meter1"] == pytest.approx(counted, rel=1e-9) and counted > 0
    assert page.inner_text('[data-key="meter1.today_wh"]').endswith("Wh")
    assert page.errors == []
