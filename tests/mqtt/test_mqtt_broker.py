"""`pm4324 run` publishing to a real Mosquitto, read by a real MQTT client (paho).

Values are compared with the `--json` lines of the same process for the same second; the
discovery payloads field by field with Home Assistant's documented MQTT schema.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from mqtt_helpers import MOSQUITTO, Broker, MeterProcess, Subscriber, meter_settings, wait_for

# Home Assistant's accepted device_class -> (units, state classes) (host-side-notes.md §1,
# from home-assistant/core sensor/const.py DEVICE_CLASS_UNITS / DEVICE_CLASS_STATE_CLASSES)
HA_SENSOR_CLASSES = {
    "energy": ({"Wh", "kWh", "MWh"}, {"total", "total_increasing"}),
    "power": ({"W", "kW", "MW"}, {"measurement"}),
    "reactive_power": ({"var"}, {"measurement"}),
    "apparent_power": ({"VA"}, {"measurement"}),
    "voltage": ({"V", "mV", "kV"}, {"measurement"}),
    "current": ({"A", "mA"}, {"measurement"}),
    "power_factor": ({None, "%"}, {"measurement"}),
    "frequency": ({"Hz", "kHz"}, {"measurement"}),
}
DEVICE_KEYS = {"identifiers", "name", "manufacturer", "model", "sw_version", "serial_number"}


def _by_seq(sub: Subscriber, topic: str) -> dict[int, dict]:
    return {p["seq"]: p for t, p in sub.json(topic) if t == topic}


def test_live_topics_equal_json_and_discovery_follows_ha_schema(broker: Broker, tmp_path):
    sub = Subscriber(broker.port, ["pm4324/#", "homeassistant/#"])
    settings = meter_settings(tmp_path, f'url = "mqtt://127.0.0.1:{broker.port}"\nnode_id = "t1"')
    meter = MeterProcess(settings, "--seconds", "6")
    try:
        assert meter.proc.wait(120) == 0, "".join(meter.stderr)
        wait_for(lambda: _by_seq(sub, "pm4324/t1/ct/24").get(meter.seq()), 10,
                 "the last second on pm4324/t1/ct/24")
    finally:
        meter.stop()
    first = min(_by_seq(sub, "pm4324/t1/device"))  # the first second after connecting
    assert meter.lines[-1]["seq"] - first >= 2  # at least three seconds compared
    for line in meter.lines:
        s = line["seq"]
        if s < first:
            continue
        for ct in line["cts"]:
            got = _by_seq(sub, f"pm4324/t1/ct/{ct['ct']}")[s]
            assert got == {"seq": s, "time": line["time"], **ct}
        for m in line["meters"]:
            assert _by_seq(sub, f"pm4324/t1/meter/{m['meter']}")[s] == {
                "seq": s, "time": line["time"], **m}
        for main in line["mains"]:
            assert _by_seq(sub, f"pm4324/t1/main/{main['main']}")[s] == {
                "seq": s, "time": line["time"], **main}
        device = _by_seq(sub, "pm4324/t1/device")[s]
        assert device["relays"] == line["relays"] and device["status"] == line["status"]

    configs = {t: p for t, p in sub.json("homeassistant/") if t.endswith("/config")}
    assert len(configs) > 200  # 24 CTs and 8 Meters x 7 quantities, mains, relays
    unique_ids = [c["unique_id"] for c in configs.values()]
    assert len(set(unique_ids)) == len(unique_ids)
    states = {t: p for t, p in sub.json("pm4324/t1/")}  # the last payload per topic
    for topic, c in configs.items():
        component, node, object_id = topic.split("/")[1:4]
        assert node == "t1" and c["unique_id"] == f"t1_{object_id}"
        assert component in ("sensor", "binary_sensor", "switch")
        assert c["name"] and c["availability_topic"] == "pm4324/t1/status"
        assert DEVICE_KEYS <= set(c["device"]) and c["device"]["model"] == "PM-4324A"
        assert c["origin"]["name"] == "pm4324"
        assert c["state_topic"] in states, f"{topic}: state topic never published"
        if component == "sensor":
            units, state_classes = HA_SENSOR_CLASSES[c["device_class"]]
            assert c.get("unit_of_measurement") in units, topic
            assert c["state_class"] in state_classes, topic
            key = re.fullmatch(r"\{\{ value_json\.(\w+)(\[\d\])? \}\}", c["value_template"])
            assert key and key.group(1) in states[c["state_topic"]], topic
        assert "command_topic" not in c  # commands are off by default

    energy = [c for c in configs.values() if c.get("device_class") == "energy"]
    assert len(energy) == 2 * 32 and all(c["unit_of_measurement"] == "kWh" and
                                         c["state_class"] == "total_increasing" for c in energy)
    # after a clean stop: the last will is "offline", and configs are retained for a newcomer
    later = Subscriber(broker.port, ["pm4324/t1/status", "homeassistant/sensor/t1/#"],
                       client_id="late-subscriber")
    try:
        wait_for(lambda: len(later.received("homeassistant/")) >= len(
            [t for t in configs if "/sensor/" in t]), 10, "retained discovery configs")
        assert all(retained for _, _, retained in later.received())
        assert later.received("pm4324/t1/status")[-1][1] == b"offline"
    finally:
        later.close()
        sub.close()


def test_broker_outage_buffers_minutes_and_sends_them_to_history_in_order(broker: Broker,
                                                                         tmp_path):
    sub = Subscriber(broker.port, ["pm4324/t2/#"])
    settings = meter_settings(tmp_path, f'url = "mqtt://127.0.0.1:{broker.port}"\nnode_id = "t2"')
    meter = MeterProcess(settings, "--speed", "20")  # one simulated minute every 3 s
    try:
        wait_for(lambda: sub.received("pm4324/t2/ct/1"), 120, "live messages")
        broker.stop()
        outage_from = meter.seq()
        wait_for(lambda: meter.seq() >= outage_from + 200, 240, "200 seconds without a broker")
        broker.start()
        wait_for(lambda: len(_by_seq(sub, "pm4324/t2/history")) >= 3, 180,
                 "three buffered minutes on the history topic")
        last = meter.seq()
        wait_for(lambda: any(p["seq"] > last for _, p in sub.json("pm4324/t2/ct/1")), 120,
                 f"live messages after the outage ({''.join(meter.stderr)})")
    finally:
        meter.stop()
        sub.close()
    assert any("buffered minutes" in line for line in meter.stderr), "".join(meter.stderr)
    minutes = [p for t, p in sub.json("pm4324/t2/history") if t == "pm4324/t2/history"]
    history = [{"seq": p["seq"], "time": p["time"], **p["cts"][0]} for p in minutes]
    assert all(len(p["cts"]) == 24 and len(p["meters"]) == 8 for p in minutes)
    times = [p["time"] for p in history]
    assert times == sorted(times) and len(set(int(t // 60) for t in times)) == len(times)
    live = [p for t, p in sub.json("pm4324/t2/ct/1") if t == "pm4324/t2/ct/1"]
    live_seqs = [p["seq"] for p in live]
    assert live_seqs == sorted(live_seqs), "a live topic carried an old second"
    before = max(p["time"] for p in live if p["seq"] <= outage_from)
    after = min(p["time"] for p in live if p["seq"] > last)
    # at least once: a second the outage cut short may have reached the broker in part
    assert all(before <= t < after for t in times)
    # the same seconds in the --json output: the buffered values are those of that second
    by_seq = {line["seq"]: line for line in meter.lines}
    for p in history:
        ct1 = by_seq[p["seq"]]["cts"][0]
        assert p["kwh_import"] == ct1["kwh_import"] and p["p_w"] == ct1["p_w"]
    # energy never decreases across live and history, in time order
    energy = [p["kwh_import"] for p in sorted(live + history, key=lambda p: p["time"])]
    assert all(b >= a for a, b in zip(energy, energy[1:]))


def test_two_meters_publish_side_by_side_without_clashes(broker: Broker, tmp_path):
    sub = Subscriber(broker.port, ["pm4324/#", "homeassistant/#"])
    url = f'url = "mqtt://127.0.0.1:{broker.port}"'
    a = MeterProcess(meter_settings(tmp_path, url, "a"), "--seconds", "3")
    b = MeterProcess(meter_settings(tmp_path, url, "b"), "--seconds", "3")
    try:
        assert a.proc.wait(120) == 0 and b.proc.wait(120) == 0
        wait_for(lambda: len({t.split("/")[1] for t, _, _ in sub.received("pm4324/")}) == 2, 10,
                 "two meters' topics")
    finally:
        a.stop()
        b.stop()
        sub.close()
    nodes = {t.split("/")[1] for t, _, _ in sub.received("pm4324/")}
    assert len(nodes) == 2 and all(n.startswith("pm4324-") for n in nodes)
    configs = [json.loads(p) for t, p, _ in sub.received("homeassistant/") if p]
    unique_ids = [c["unique_id"] for c in configs]
    assert len(set(unique_ids)) == len(unique_ids)
    assert len({c["device"]["identifiers"][0] for c in configs}) == 2


def test_relay_commands_go_through_the_write_policy_and_are_audited(broker: Broker, tmp_path):
    """Relay 1 (manual) switches for an account with the "relays" role; relay 2 (alarm mode)
    refuses; a meter whose account has no role shows its relays as read-only binary sensors
    and switches nothing."""
    sub = Subscriber(broker.port, ["pm4324/#", "homeassistant/switch/#",
                                   "homeassistant/binary_sensor/#"])
    settings = meter_settings(tmp_path, f'url = "mqtt://ops@127.0.0.1:{broker.port}"\n'
                              'node_id = "t3"\ncommands = "relays"')
    settings.write_text(settings.read_text() + '\n[relays.2]\nmode = "alarm"\n\n'
                        '[security.mqtt_accounts]\nops = "relays"\n')
    nobody = meter_settings(tmp_path, f'url = "mqtt://guest@127.0.0.1:{broker.port}"\n'
                            'node_id = "t5"\ncommands = "relays"', "n")
    meter, other = MeterProcess(settings), MeterProcess(nobody)
    try:
        wait_for(lambda: sub.received("homeassistant/switch/t3/relay1/config") and
                 sub.received("homeassistant/binary_sensor/t5/relay1/config"), 120,
                 "the relay configs")
        sub.client.publish("pm4324/t3/relay/1/set", "ON", qos=1)
        wait_for(lambda: any(line["relays"][0] for line in meter.lines), 20, "relay 1 closed")
        wait_for(lambda: any(p["relays"][0] for _, p in sub.json("pm4324/t3/device")), 10,
                 "relay 1 closed on the device topic")
        sub.client.publish("pm4324/t3/relay/2/set", "ON", qos=1)
        error = wait_for(lambda: sub.json("pm4324/t3/command/error"), 20, "the alarm-mode refusal")
        sub.client.publish("pm4324/t5/relay/1/set", "ON", qos=1)
        seen = len(other.lines)
        wait_for(lambda: len(other.lines) >= seen + 3, 30, "three more seconds of the other meter")
    finally:
        meter.stop()
        other.stop()
        sub.close()
    assert "alarm mode" in error[0][1]["reason"]
    assert not sub.received("homeassistant/switch/t5/")
    assert not any(line["relays"][1] for line in meter.lines)
    assert not any(line["relays"][0] for line in other.lines)
    config = json.loads(sub.received("homeassistant/switch/t3/relay1/config")[0][1])
    assert config["command_topic"] == "pm4324/t3/relay/1/set"
    audit = subprocess.run([sys.executable, "-m", "pm4324.cli.cli", "audit", "--settings",
                            str(settings), "--json"], capture_output=True, text=True, timeout=60)
    entries = [json.loads(line) for line in audit.stdout.splitlines() if line.strip()]
    assert any(e.get("interface") == "mqtt" and e.get("outcome") == "accepted"
               and "relay1" in e.get("target", "") for e in entries), audit.stdout + audit.stderr


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def test_tls_with_a_client_certificate(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    d = tmp_path
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, ext in (("server", ["-extfile", "san.ext"]), ("meter", [])):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", *ext, cwd=d)
    broker = Broker(d, extra=f"cafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n"
                    "require_certificate true\nuse_identity_as_username true\n"
                    "allow_anonymous false\n")
    broker.start()
    try:
        sub = Subscriber(broker.port, ["pm4324/t4/#"], ca_certs=str(d / "ca.crt"),
                         certfile=str(d / "meter.crt"), keyfile=str(d / "meter.key"))
        settings = meter_settings(d, f'url = "mqtts://127.0.0.1:{broker.port}"\nnode_id = "t4"\n'
                                  f'ca_file = "{d}/ca.crt"\ncert_file = "{d}/meter.crt"\n'
                                  f'key_file = "{d}/meter.key"')
        meter = MeterProcess(settings, "--seconds", "3")
        try:
            assert meter.proc.wait(120) == 0, "".join(meter.stderr)
            wait_for(lambda: sub.json("pm4324/t4/ct/1"), 10, "a message over TLS")
        finally:
            meter.stop()
            sub.close()
        assert sub.json("pm4324/t4/ct/1")[-1][1]["seq"] == meter.lines[-1]["seq"]
    finally:
        broker.stop()
