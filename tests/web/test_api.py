"""The HTTP API against the meter's own snapshot and against a real Modbus client (pymodbus)
reading the same second, and its writes against what Modbus and the settings file show."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pymodbus.client import ModbusTcpClient

from pm4324.client.modbus import modbus_reader, read_meter
from pm4324.config.settings_parse import load_settings
from pm4324.registers.table import FIELD_UNITS, load_map

SETTINGS_TOKEN = {"Authorization": "Bearer settings-token-0123456789"}
RELAYS_TOKEN = {"Authorization": "Bearer relays-token-0123456789"}


def modbus_read(live) -> dict:
    client = ModbusTcpClient("127.0.0.1", port=live.modbus.port, timeout=5)
    assert client.connect()
    try:
        return read_meter(modbus_reader(client, 1, "test"))
    finally:
        client.close()


def values(view: dict) -> dict[str, float | None]:
    return {v["quantity"]: v["value"] for v in view["values"]}


def test_api_and_modbus_serve_the_same_second(live):
    snap = live.step()
    with live.http() as http:
        api = http.get("/api/snapshot").json()
        cts = http.get("/api/cts").json()
        meters = http.get("/api/meters").json()
    mb = modbus_read(live)
    assert api["seq"] == snap.seq == mb["seq"]
    for k, ct in enumerate(cts):
        got = values(ct)
        assert got["p_w"] == pytest.approx(float(snap.ct.p_w[k]), rel=1e-12)
        assert got["wh_import"] == pytest.approx(float(snap.ct_energy.wh_import[k]), rel=1e-12)
        for q in ("v_rms", "i_rms", "p_w", "q_var", "pf"):
            assert got[q] == pytest.approx(mb["cts"][k][q], rel=1e-6, abs=1e-6), (k + 1, q)
    for m, meter in enumerate(meters):
        got = values(meter)
        for q in ("i_rms", "p_w", "q_var", "s_va"):
            assert got[q] == pytest.approx(mb["meters"][m][q], rel=1e-6, abs=1e-6), (m + 1, q)
        assert api["meters"][m]["p_w"] == pytest.approx(got["p_w"], rel=1e-6)


def test_every_value_has_its_unit(live):
    with live.http() as http:
        ct = http.get("/api/cts/7").json()
        mains = http.get("/api/mains").json()
    units = {v["quantity"]: v["unit"] for v in ct["values"]}
    assert units["p_w"] == "W" and units["i_rms"] == "A" and units["wh_import"] == "Wh"
    assert all(units[q] == FIELD_UNITS[q] for q in units)
    assert ct["name"] == "CT 7" and ct["meter"] == 3 and ct["phase"] == "a"
    assert len(mains) == 2 and mains[0]["units"]["v_ln"] == "V"


def test_harmonics_are_orders_1_to_50_and_give_the_thd(live):
    with live.http() as http:
        h = http.get("/api/cts/4/harmonics").json()
    assert h["orders"] == list(range(1, 51))
    i = np.array([x or 0.0 for x in h["i_rms"]])
    thd = 100 * math.sqrt(float(np.sum(i[1:] ** 2))) / i[0]
    assert thd == pytest.approx(h["thd_i_pct"], rel=1e-6)


def test_waveforms_hold_whole_cycles_of_the_measured_values(live):
    snap = live.step()
    with live.http() as http:
        w = http.get("/api/meters/2/waveforms").json()
    v, i = np.array(w["v"]), np.array(w["i"])
    # two whole cycles at the measured frequency
    assert v.shape[1] == pytest.approx(2 * w["sample_rate_hz"] / snap.main.frequency_hz[0], abs=1.5)
    # their RMS is the second's RMS (the simulated loads are steady within a second)
    np.testing.assert_allclose(np.sqrt(np.mean(v**2, axis=1)), snap.main.v_ln[0], rtol=5e-3)
    np.testing.assert_allclose(np.sqrt(np.mean(i**2, axis=1)), snap.ct.i_rms[3:6], rtol=5e-3)
    # the angle between each CT's current and its voltage is that of (P, Q1)
    for k in range(3):
        angle = w["v_phasors"][k]["deg"] - w["i_phasors"][k]["deg"]
        expected = math.degrees(math.atan2(snap.ct.q_var[3 + k], snap.ct.p_w[3 + k]))
        assert (angle - expected + 180) % 360 - 180 == pytest.approx(0, abs=1.0)


def test_events_list_the_power_up(live):
    with live.http() as http:
        events = http.get("/api/events", params={"limit": 1000}).json()
        kinds = http.get("/api/events", params={"kind": "power_up"}).json()
    assert any(e["kind"] == "power_up" for e in events)
    assert kinds and all(e["kind"] == "power_up" for e in kinds)


def test_relay_writes_need_the_relays_role_and_show_on_modbus(live):
    with live.http() as http:
        refused = http.put("/api/relays/1", json={"closed": True})
        assert refused.status_code == 401 and "credential" in refused.json()["reason"]
        wrong = http.put("/api/relays/1", json={"closed": True}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        done = http.put("/api/relays/1", json={"closed": True}, headers=RELAYS_TOKEN)
        assert done.status_code == 200 and done.json() == {"relay": 1, "closed": True, "mode": "manual"}
    live.step()
    client = ModbusTcpClient("127.0.0.1", port=live.modbus.port, timeout=5)
    assert client.connect()
    try:
        assert client.read_coils(0x1000, count=2, device_id=1).bits[:2] == [True, False]
    finally:
        client.close()
    with live.http() as http:
        http.put("/api/relays/1", json={"closed": False}, headers=RELAYS_TOKEN)
        assert http.get("/api/relays").json()[0]["closed"] is False


def test_settings_writes_are_validated_like_the_file_and_need_the_settings_role(live):
    change = {"changes": {"meters.2.ct_ratio": 200}}
    with live.http() as http:
        assert http.patch("/api/settings", json=change).status_code == 401
        assert http.patch("/api/settings", json=change, headers=RELAYS_TOKEN).status_code == 403
        bad = http.patch("/api/settings", json={"changes": {"meters.2.ct_ratio": 0}}, headers=SETTINGS_TOKEN)
        assert bad.status_code == 422
        assert bad.json()["key"] == "meters.2.ct_ratio" and "65535" in bad.json()["reason"]
        unknown = http.patch("/api/settings", json={"changes": {"meters.2.colour": 1}},
                             headers=SETTINGS_TOKEN)
        assert unknown.status_code == 422 and "colour" in unknown.json()["reason"]
        ok = http.patch("/api/settings", json=change, headers=SETTINGS_TOKEN)
        assert ok.status_code == 200 and ok.json()["values"]["meters"]["2"]["ct_ratio"] == 200
    live.step()
    client = ModbusTcpClient("127.0.0.1", port=live.modbus.port, timeout=5)
    assert client.connect()
    try:
        assert client.read_holding_registers(0x1001, count=1, device_id=1).registers == [200]
    finally:
        client.close()
    assert live.meter.wait_settings_saved()
    assert load_settings(live.meter.settings_path).meters[1].ct_ratio == 200
    with live.http() as http:
        http.patch("/api/settings", json={"changes": {"meters.2.ct_ratio": 100}}, headers=SETTINGS_TOKEN)


def test_errors_are_json_with_a_reason(live):
    with live.http() as http:
        for path in ("/api/nothing", "/api/cts/25", "/api/meters/x"):
            r = http.get(path)
            assert r.status_code in (404, 422) and r.json()["reason"]


def test_register_map_is_the_generated_one(live):
    with live.http() as http:
        points = http.get("/api/registers").json()["points"]
    assert [p["name"] for p in points] == [p.name for p in load_map().points]


def test_stream_sends_each_second_once(live):
    with live.http() as http, http.stream("GET", "/api/stream") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()

        def next_event() -> dict:
            for line in lines:
                if line.startswith("data: "):
                    return json.loads(line[6:])
            raise AssertionError("stream ended")

        first = next_event()
        snap = live.step()
        second = next_event()
    assert second["seq"] == first["seq"] + 1 == snap.seq
    assert second["meters"][0]["p_w"] == pytest.approx(float(snap.meter.p_w[0]), rel=1e-6)


def test_alarm_acknowledgement_needs_the_relays_role(live):
    with live.http() as http:
        assert http.post("/api/alarms/acknowledge", json={"relay": None}).status_code == 401
        ok = http.post("/api/alarms/acknowledge", json={"relay": 1}, headers=RELAYS_TOKEN)
        assert ok.status_code == 200 and ok.json() == http.get("/api/alarms").json() == []
        assert http.post("/api/alarms/acknowledge", json={"relay": 3},
                         headers=RELAYS_TOKEN).status_code == 422


def test_energy_reset_needs_its_own_role_and_zeroes_the_meter(live):
    live.step()
    with live.http() as http:
        assert http.post("/api/energy/reset", json={"meter": 2}, headers=SETTINGS_TOKEN).status_code == 403
        assert values(http.get("/api/meters/2").json())["wh_import"] > 0
        done = http.post("/api/energy/reset", json={"meter": 2},
                         headers={"Authorization": "Bearer energy-token-0123456789"})
        assert done.status_code == 200 and "Meter 2" in done.json()[0]["text"]
    snap = live.step()
    mb = modbus_read(live)
    assert mb["seq"] == snap.seq
    # one second of energy since the reset, on Modbus and in the API alike
    assert float(snap.meter_energy.wh_import[1]) < float(snap.meter.p_w[1]) / 3600 * 1.01
    assert mb["meters"][1]["kwh_import"] == pytest.approx(  # read in 0.01 kWh steps
        float(snap.meter_energy.wh_import[1]) / 1000, abs=0.01)
    assert float(snap.meter_energy.wh_import[0]) > float(snap.meter.p_w[0]) / 3600 * 2  # Meter 1 kept


def test_a_relay_in_alarm_mode_is_not_switched_by_hand(live):
    with live.http() as http:
        to_alarm = http.patch("/api/settings", json={"changes": {"relays.2.mode": "alarm"}},
                              headers=SETTINGS_TOKEN)
        assert to_alarm.status_code == 200, to_alarm.json()
        refused = http.put("/api/relays/2", json={"closed": True}, headers=RELAYS_TOKEN)
        assert refused.status_code == 409 and "alarm mode" in refused.json()["reason"]
        assert http.get("/api/relays").json()[1] == {"relay": 2, "closed": False, "mode": "alarm"}
        back = http.patch("/api/settings", json={"changes": {"relays.2.mode": "manual"}},
                          headers=SETTINGS_TOKEN)
        assert back.status_code == 200
        assert http.put("/api/relays/2", json={"closed": False}, headers=RELAYS_TOKEN).status_code == 200


def test_settings_keys_reach_list_items(live):
    with live.http() as http:
        one = http.patch("/api/settings", json={"changes": {"meters.3.circuit_phases.2": "a"}},
                         headers=SETTINGS_TOKEN)
        assert one.status_code == 200
        assert one.json()["values"]["meters"]["3"]["circuit_phases"] == ["a", "a", "c"]
        assert live.meter.settings.meters[2].circuit_phases == ("a", "a", "c")
        for key in ("meters.3.circuit_phases.0", "meters.3.circuit_phases.4", "meters.3.circuit_phases.x"):
            r = http.patch("/api/settings", json={"changes": {key: "a"}}, headers=SETTINGS_TOKEN)
            assert r.status_code == 422 and r.json()["key"] == key
        http.patch("/api/settings", json={"changes": {"meters.3.circuit_phases.2": "b"}},
                   headers=SETTINGS_TOKEN)


def test_a_key_the_operator_edited_on_disk_meanwhile_is_a_conflict(live):
    assert live.meter.wait_settings_saved()
    path = live.meter.settings_path
    text = open(path).read()
    edited = text.replace("[meters.4]\nwiring = \"3P4W-3CT\"\nct_type_a = 100",
                          "[meters.4]\nwiring = \"3P4W-3CT\"\nct_type_a = 200")
    assert edited != text
    open(path, "w").write(edited)
    with live.http() as http:
        r = http.patch("/api/settings", json={"changes": {"meters.4.ct_ratio": 300}},
                       headers=SETTINGS_TOKEN)
    assert r.status_code == 409 and r.json()["reason"]
    assert live.meter.settings.meters[3].ct_ratio == 100
    open(path, "w").write(text)


def test_http_writes_are_audited_with_the_token_name_and_address(live):
    with live.http() as http:
        http.put("/api/relays/2", json={"closed": False}, headers=SETTINGS_TOKEN)  # role settings: allowed
        http.post("/api/energy/reset", json={"meter": 8}, headers=RELAYS_TOKEN)  # role relays: refused
    audit = live.web.guard.audit
    audit.flush()
    accepted = [e for e in audit.entries(outcome="accepted") if e.interface == "http"]
    refused = [e for e in audit.entries(outcome="refused") if e.interface == "http"]
    assert any(e.target == "relay 2" and e.subject == "engineer" and e.role == "settings"
               and e.address.startswith("127.0.0.1:") for e in accepted)
    assert any(e.target == "energy of Meter 8" and e.subject == "hmi" for e in refused)
