"""`/api/faults` and `pm4324 fault` against a live meter: set and clear need the settings
right and are audited; a live fault shows in the measured values as the truth says; the
fault log gets one JSON line per start and end."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from web_helpers import TOKENS, LiveMeter, settings_with_tokens

from pm4324.cli.cli import main
from pm4324.config.settings_parse import load_settings
from pm4324.device.faults import apply_device_faults
from pm4324.device.meter import Meter
from pm4324.faults.log import FaultLog
from pm4324.faults.switch import FaultSwitch, offline_while_off
from pm4324.protocols.faults import ProtocolFaults
from pm4324.protocols.modbus.tcp import TcpServer
from pm4324.registers.image import MapBackend
from pm4324.security.audit import AuditLog
from pm4324.security.guard import Guard
from pm4324.sources.scenario_parse import parse_scenario
from pm4324.sources.simulator import SimulatorSource
from pm4324.web.server import WebServer

SCENARIO = {"loads": [{"cts": [1, 2, 3], "current_a": 50.0, "pf": 0.9}],
            "faults": [{"kind": "open_ct", "target": "ct3", "start_s": 1, "end_s": 2}]}
ENGINEER = TOKENS["engineer"][1]  # role settings
HMI = TOKENS["hmi"][1]  # role relays


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    path = tmp / "settings.toml"
    path.write_text(settings_with_tokens())
    settings = load_settings(path)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    scenario = parse_scenario(SCENARIO)
    log = FaultLog(tmp / "faults.jsonl")

    async def start() -> LiveMeter:
        source = SimulatorSource(scenario, settings)
        meter = Meter(settings, source, start_time=1_800_000_000.0)
        protocol = ProtocolFaults("meter-7")
        switch = FaultSwitch(source.faults, "meter-7", lambda t: meter.start_time + t, log,
                             protocol)
        modbus = TcpServer(MapBackend(meter), unit_id=1, host="127.0.0.1", port=0,
                           faults=protocol)
        apply_device_faults(meter, source.faults)
        offline_while_off(meter, protocol)
        await modbus.start()
        web = WebServer(meter, "127.0.0.1", 0, guard=Guard(settings.security, AuditLog()),
                        faults=switch)
        await web.start()
        return LiveMeter(meter, web, modbus, asyncio.get_running_loop())

    meter = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    meter.scenario, meter.log = scenario, log
    meter.step(3)  # the scheduled open CT3 from 1 s to 2 s has come and gone
    yield meter

    async def stop() -> None:
        await meter.web.stop()
        await meter.modbus.stop()

    meter.call(stop())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_set_needs_the_settings_right_and_is_audited(live):
    body = {"kind": "reversed_ct", "target": "ct2"}
    with live.http() as http:
        assert http.post("/api/faults", json=body).status_code == 401
        assert http.post("/api/faults", json=body, headers=_auth(HMI)).status_code == 403
        bad = http.post("/api/faults", json={"kind": "open_ct", "target": "main1"},
                        headers=_auth(ENGINEER))
        assert bad.status_code == 422 and "must be ctN" in bad.json()["reason"]
        r = http.post("/api/faults", json=body, headers=_auth(ENGINEER))
        assert r.status_code == 200, r.text
        fault = r.json()
        assert (fault["kind"], fault["target"], fault["state"], fault["origin"]) == \
            ("reversed_ct", "ct2", "active", "live")
        assert fault["start_s"] == 3.0  # the next sample: the meter has measured 3 s
        before = live.step()
        during = live.step()
        truth = live.scenario.expected(live.meter.settings, 4.5,
                                       live.meter.source.faults.faults)[1]
        assert truth["p_w"] < 0
        assert during.ct.p_w[1] == pytest.approx(truth["p_w"], rel=1e-3)
        assert before.ct.p_w[1] < 0  # second 3 was already reversed
        listed = {f["id"]: f for f in http.get("/api/faults").json()}
        assert listed[fault["id"]]["state"] == "active"
        assert listed[1]["state"] == "ended" and listed[1]["origin"] == "scenario"
        assert http.delete(f"/api/faults/{fault['id']}").status_code == 401
        assert http.delete("/api/faults/99", headers=_auth(ENGINEER)).status_code == 404
        cleared = http.delete(f"/api/faults/{fault['id']}", headers=_auth(ENGINEER)).json()
        assert cleared[0]["end_s"] == 5.0
    after = live.step(2)
    assert after.ct.p_w[1] > 0
    live.web.guard.audit.flush()
    audit = live.web.guard.audit.entries()
    assert sorted((e.outcome, e.target, e.subject) for e in audit if "fault" in e.target) == [
        ("accepted", "fault 2", "engineer"), ("accepted", "fault reversed_ct on ct2", "engineer"),
        ("refused", "fault 2", ""), ("refused", "fault reversed_ct on ct2", ""),
        ("refused", "fault reversed_ct on ct2", "hmi")]


def test_the_fault_log_has_one_line_per_start_and_end(live):
    lines = [json.loads(x) for x in live.log.path.read_text().splitlines()]
    first = lines[:2]
    assert [(x["event"], x["fault"], x["target"], x["id"], x["origin"]) for x in first] == [
        ("start", "open_ct", "ct3", 1, "scenario"), ("end", "open_ct", "ct3", 1, "scenario")]
    assert first[0]["meter"] == "meter-7" and first[0]["end"] is None
    assert first[1]["start"] == "2027-01-15T08:00:01.000Z"  # start_time 1.8e9 + 1 s
    assert first[1]["end"] == "2027-01-15T08:00:02.000Z"
    assert first[1]["start_unix"] == 1_800_000_001.0 and first[1]["end_s"] == 2.0


def test_cli_sets_lists_and_clears(live, capsys):
    url = live.url
    assert main(["fault", "--http", url, "set", "open_ct", "ct1"]) == 2
    assert "401" in capsys.readouterr().err
    assert main(["fault", "--http", url, "--token", ENGINEER, "set", "ct_saturation", "ct1",
                 "clip_a=40", "--for", "2"]) == 0
    out = capsys.readouterr().out
    assert "ct_saturation" in out and "clip_a=40" in out and "active" in out
    live.step()
    assert main(["fault", "--http", url, "--json", "list"]) == 0
    rows = json.loads(capsys.readouterr().out)
    sat = [f for f in rows if f["kind"] == "ct_saturation"][0]
    assert sat["state"] == "active" and sat["parameters"] == {"clip_a": 40.0}
    assert main(["fault", "--http", url, "--token", ENGINEER, "set", "vt_loss", "main1.x"]) == 2
    assert "mainM.a|b|c" in capsys.readouterr().err
    assert main(["fault", "--http", url, "--token", ENGINEER, "clear"]) == 0
    assert "ct_saturation" in capsys.readouterr().out
    assert main(["fault", "--http", url, "kinds"]) == 0
    assert "energy_rollover" in capsys.readouterr().out
    assert main(["fault", "--http", "http://127.0.0.1:9", "list"]) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_check_wiring_reads_a_running_meter_over_modbus(live, capsys):
    from web_helpers import SETTINGS

    with live.http() as http:
        fault = http.post("/api/faults", json={"kind": "reversed_ct", "target": "ct3"},
                          headers=_auth(ENGINEER)).json()
        live.step(2)
        where = f"127.0.0.1:{live.modbus.port}"
        code = main(["check-wiring", "--tcp", where, "--seconds", "1", "--settings", str(SETTINGS)])
        out = capsys.readouterr().out
        assert code == 1, out
        assert "CT3 reversed (P -10.35 kW at PF 0.90 as wired)" in out
        assert "CT1 ok (P 10.35 kW at PF 0.90 lagging on phase a)" in out
        http.delete(f"/api/faults/{fault['id']}", headers=_auth(ENGINEER))


def test_api_wiring_and_the_wiring_page(live, browser):
    with live.http() as http:
        fault = http.post("/api/faults", json={"kind": "wrong_phase", "target": "ct2",
                                               "parameters": {"phase": "c"}},
                          headers=_auth(ENGINEER)).json()
        live.step(2)
        w = http.get("/api/wiring").json()
        cts = {c["ct"]: c for c in w["cts"]}
        assert cts[2]["status"] == "wrong_phase" and cts[2]["fix"] == ['[cts.2] phase = "c"']
        assert cts[1]["status"] == "ok" and cts[3]["status"] == "ok"
        assert w["problems"] == 1 and [m["status"] for m in w["mains"]] == ["ok", "ok"]
        page = browser.new_page()
        try:
            page.goto(live.url + "wiring")
            row = page.wait_for_selector('#wiring tr[data-ct="2"]', timeout=20_000)
            assert row.get_attribute("data-status") == "wrong_phase"
            assert 'phase = "c"' in row.inner_text()
        finally:
            page.close()
        http.delete(f"/api/faults/{fault['id']}", headers=_auth(ENGINEER))


def test_protocol_faults_through_the_same_switch(live, capsys):
    from pymodbus.client import ModbusTcpClient

    client = ModbusTcpClient("127.0.0.1", port=live.modbus.port, timeout=5, retries=0)
    assert client.connect()
    try:
        with live.http() as http:
            assert "latency" in http.get("/api/fault-kinds").json()
            bad = http.post("/api/faults", json={"kind": "exception", "target": "ct1"},
                            headers=_auth(ENGINEER))
            assert bad.status_code == 422 and "its target is protocol" in bad.json()["reason"]
        assert main(["fault", "--http", live.url, "--token", ENGINEER, "set", "exception",
                     "protocol", "code=6"]) == 0
        assert "exception" in capsys.readouterr().out
        rr = client.read_input_registers(0x1000, count=2, device_id=1)
        assert rr.isError() and rr.exception_code == 6
        with live.http() as http:
            listed = [f for f in http.get("/api/faults").json() if f["target"] == "protocol"]
            assert [(f["id"], f["parameters"]["code"], f["state"]) for f in listed] == \
                [("exception", 6, "active")]
        assert main(["fault", "--http", live.url, "--token", ENGINEER, "clear", "exception"]) == 0
        assert "exception" in capsys.readouterr().out
        assert not client.read_input_registers(0x1000, count=2, device_id=1).isError()
        assert main(["fault", "--http", live.url, "--token", ENGINEER, "clear", "latency"]) == 2
        assert "404" in capsys.readouterr().err
    finally:
        client.close()


def test_power_cycle_set_live_silences_modbus_until_power_up(live):
    from pymodbus.client import ModbusTcpClient
    from pymodbus.exceptions import ModbusIOException

    client = ModbusTcpClient("127.0.0.1", port=live.modbus.port, timeout=1, retries=0)
    assert client.connect()
    try:
        assert not client.read_input_registers(0x1000, count=2, device_id=1).isError()
        with live.http() as http:
            r = http.post("/api/faults", json={"kind": "power_cycle", "target": "all",
                                               "parameters": {"off_s": 2}},
                          headers=_auth(ENGINEER))
            assert r.status_code == 200, r.text
            off = live.step()
            assert off.seq == -1 and off.status == 1  # no_data; nothing published meanwhile
            with pytest.raises(ModbusIOException):  # offline: no answer, the client times out
                client.read_input_registers(0x1000, count=2, device_id=1)
            client.close()
            live.step(2)
            assert client.connect()
            assert not client.read_input_registers(0x1000, count=2, device_id=1).isError()
            events = [e["kind"] for e in http.get("/api/events").json()]
            assert "power_up" in events and "power_down" in events
    finally:
        client.close()
