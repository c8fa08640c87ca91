"""Every member on the HTTP API (one server, ``?device=KEY``) and on MQTT (a node per member,
published to a Mosquitto of the test's own), each with its own truth."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest
from fleet_helpers import SPEED, open_fleet, serving, small_fleet
from mqtt_helpers import MOSQUITTO, Broker, Subscriber, wait_for

from pm4324.cli.fleet_cmd import _start_web_mqtt


def _truth(fleet, j: int, k: int, ct: int) -> dict:
    m = fleet.config.members[j]
    return m.scenario.expected(m.settings, k + 0.5)[ct - 1]


async def test_http_api_shows_every_member(tmp_path):
    config = small_fleet(tmp_path, http={"listen": "127.0.0.1:0"})
    fleet = open_fleet(config)
    async with serving(fleet) as servers:
        await _start_web_mqtt(config, fleet, servers)
        stop = threading.Event()
        await asyncio.to_thread(fleet.run, stop, 2, SPEED)
        url = f"http://127.0.0.1:{servers[0].port}"
        async with httpx.AsyncClient(timeout=5) as client:
            listed = (await client.get(f"{url}/api/fleet")).text
            for j in (0, 3):
                key = config.members[j].key
                d = (await client.get(f"{url}/api/snapshot", params={"device": key})).json()
                ct = next(c for c in d["cts"] if c["ct"] == 5)
                assert d["seq"] == fleet.published_k
                want = _truth(fleet, j, fleet.published_k, 5)
                assert ct["i_rms"] == pytest.approx(want["i_rms"], rel=1e-5)
        assert all(m.key in listed for m in config.members)


def test_mqtt_publishes_each_member_as_its_node(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    broker = Broker(tmp_path)
    broker.start()
    try:
        config = small_fleet(tmp_path, mqtt={"url": f"mqtt://127.0.0.1:{broker.port}",
                                             "topic_prefix": "fleettest"})
        fleet = open_fleet(config)
        sub = Subscriber(broker.port, ["fleettest/#"], client_id="fleet-test")
        stops = asyncio.run(_start_web_mqtt(config, fleet, []))
        try:
            fleet.run(threading.Event(), 3, SPEED)
            k = fleet.published_k
            for j in (1, 3):
                topic = f"fleettest/hub-{config.members[j].key}/ct/2"

                def last(topic=topic):
                    got = [json.loads(p) for t, p, _ in sub.received(topic) if t == topic]
                    return [g for g in got if g.get("seq", k) == k] or None

                payload = wait_for(last, 10, topic)[-1]
                assert payload["i_rms"] == pytest.approx(_truth(fleet, j, k, 2)["i_rms"],
                                                         rel=1e-5)
        finally:
            for stop in stops:
                stop()
            sub.client.loop_stop()
            fleet.close()
    finally:
        broker.stop()
