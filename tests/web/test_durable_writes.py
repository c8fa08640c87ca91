"""An HTTP write answers 200 only once its change is on disk, and 503 with a JSON reason when
the commit cannot finish within 50 ms (docs/energy-store.md, "Acknowledged means durable").
The meter is a real one with its state files; the truth is what those files hold."""

from __future__ import annotations

import httpx
import pytest
from web_helpers import TOKENS, settings_with_tokens

from pm4324.config.settings_parse import load_settings
from pm4324.device.meter import Meter
from pm4324.device.store import Store, peek
from pm4324.security.audit import AuditLog
from pm4324.security.guard import Guard
from pm4324.sources.scenario_parse import load_scenario
from pm4324.sources.simulator import SimulatorSource
from pm4324.web.server import WebServer

RETRIES = 20  # 503: the commit took > 50 ms (a loaded box)
RELAYS = {"Authorization": f"Bearer {TOKENS['hmi'][1]}"}
ENERGY = {"Authorization": f"Bearer {TOKENS['billing'][1]}"}


@pytest.fixture
async def served(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text(settings_with_tokens())
    settings = load_settings(path)
    store = Store.open(tmp_path / "var" / "t.state.db", tmp_path / "t.meter-id")
    meter = Meter(settings, SimulatorSource(load_scenario(None), settings), store=store)
    meter.step()
    web = WebServer(meter, "127.0.0.1", 0, guard=Guard(settings.security, AuditLog()))
    await web.start()
    yield meter, httpx.AsyncClient(base_url=web.url.rstrip("/"), timeout=10.0)
    await web.stop()
    meter.close()


async def _until_saved(send) -> httpx.Response:
    for _ in range(RETRIES):
        rsp = await send()
        if rsp.status_code != 503:
            return rsp
    return rsp


async def test_a_200_relay_write_and_energy_reset_are_on_disk(served):
    meter, http = served
    async with http:
        for closed in (True, False, True):
            rsp = await _until_saved(lambda c=closed: http.put(
                "/api/relays/1", json={"closed": c}, headers=RELAYS))
            assert rsp.status_code == 200 and rsp.json()["closed"] is closed
            assert peek(meter.store.path).relays[0] is closed  # on disk when answered
        assert peek(meter.store.path).meter.energies().wh_import[0] > 0
        rsp = await _until_saved(lambda: http.post("/api/energy/reset", json={"meter": 1},
                                                   headers=ENERGY))
        assert rsp.status_code == 200
        assert peek(meter.store.path).meter.energies().wh_import[0] == 0


async def test_a_commit_that_cannot_finish_is_503_with_a_reason(served):
    meter, http = served
    async with http:
        with meter.store._lock:  # the disk does not finish the commit
            rsp = await http.put("/api/relays/1", json={"closed": True}, headers=RELAYS)
        assert rsp.status_code == 503
        assert rsp.json()["error"] == "Service Unavailable"
        assert "not saved to disk within 50 ms" in rsp.json()["reason"]
        assert meter.relays[0] is True  # applied all the same
        rsp = await _until_saved(lambda: http.put("/api/relays/1", json={"closed": False},
                                                  headers=RELAYS))
        assert rsp.status_code == 200 and peek(meter.store.path).relays[0] is False
