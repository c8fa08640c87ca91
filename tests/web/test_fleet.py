"""One web server for several meters, as a hub runs it: each meter's second by its key, the
fleet's online state, all of them in /metrics, and no local meter to write to."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from web_helpers import SETTINGS

from pm4324.config.settings_parse import load_settings
from pm4324.device.meter import Meter
from pm4324.sources.scenario_parse import load_scenario
from pm4324.sources.simulator import SimulatorSource
from pm4324.web.server import WebServer


@pytest.fixture(scope="module")
def hub():
    base = load_settings(SETTINGS)
    meters = {"north": Meter(base, SimulatorSource(load_scenario(None), base))}
    south = base.with_meter(1, ct_ratio=400.0)  # same loads, another CT: other readings
    meters["south"] = Meter(south, SimulatorSource(load_scenario(None), south))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    web = WebServer(None, "127.0.0.1", 0, keys=list(meters))
    asyncio.run_coroutine_threadsafe(web.start(), loop).result(30)
    yield web, meters, loop
    asyncio.run_coroutine_threadsafe(web.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def publish(hub, key: str):
    web, meters, loop = hub
    snap = meters[key].step()
    web.publish(key, snap)

    async def settled() -> None:  # the primary meter's stream feed takes it on the next turn
        for _ in range(1000):
            if key != "north" or web.service.feed.snapshot is snap:
                return
            await asyncio.sleep(0)

    asyncio.run_coroutine_threadsafe(settled(), loop).result(10)
    return snap


def test_each_meter_by_its_key_and_the_fleet_state(hub):
    web = hub[0]
    with httpx.Client(base_url=web.url.rstrip("/"), timeout=10) as http:
        assert http.get("/api/cts/1").status_code == 503  # nothing measured yet
        north, south = publish(hub, "north"), publish(hub, "south")
        fleet = {m["key"]: m for m in http.get("/api/fleet").json()}
        assert fleet["north"]["online"] and fleet["south"]["seq"] == south.seq
        assert fleet["south"]["model"] == "PM-4324A"
        ct1_north = http.get("/api/cts/1").json()  # the first meter by default
        ct1_south = http.get("/api/cts/1", params={"device": "south"}).json()
        assert ct1_north["values"][2]["value"] == float(north.ct.p_w[0])
        assert ct1_south["values"][2]["value"] == float(south.ct.p_w[0])
        assert ct1_south["values"][2]["value"] != ct1_north["values"][2]["value"]
        assert http.get("/api/cts/1", params={"device": "east"}).status_code == 404
        web.fleet.mark("south", False)
        assert {m["key"]: m["online"] for m in http.get("/api/fleet").json()} == {
            "north": True, "south": False}
        assert http.put("/api/relays/1", json={"closed": True}).status_code == 404  # no local meter
        no_local = http.get("/api/relays")
        assert no_local.status_code == 404 and "hub" in no_local.json()["reason"]
        text = http.get("/metrics").text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    p = {(s.labels["meter"], s.labels["ct"]): s.value for s in fams["pm4324_ct_active_power_watts"].samples}
    assert p[("north", "1")] == float(north.ct.p_w[0]) and p[("south", "1")] == float(south.ct.p_w[0])


def test_the_building_page_lists_the_hubs_meters_and_shows_each(hub, browser):
    web = hub[0]
    web.fleet.mark("south", True)
    publish(hub, "north")
    south = publish(hub, "south")
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(web.url)
    page.wait_for_selector("#fleet tr[data-device='south']", timeout=10_000)
    assert "online" in page.inner_text("#fleet tr[data-device='south']")
    page.goto(web.url + "?device=south")
    page.wait_for_selector(f'#live[data-seq="{south.seq}"]', timeout=10_000)
    shown = float(page.get_attribute('[data-key="ct1.p_w"]', "data-raw"))
    assert shown == pytest.approx(float(south.ct.p_w[0]), rel=1e-8)  # the JSON keeps 9 digits
    assert page.get_attribute("nav a[data-nav='meter']", "href").endswith("?device=south")
    page.close()
    assert errors == []
