"""The MQTT parts that need no broker: settings, the dead band, the bounded disk buffer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pm4324.config.settings import SettingsError
from pm4324.config.settings_parse import parse_settings
from pm4324.mqtt.buffer import ForwardBuffer
from pm4324.mqtt.topics import changed, history_message, minute_reading


@pytest.mark.parametrize("url, says", [
    ("http://broker", 'must start with "mqtt://" or "mqtts://"'),
    ("mqtt://", "names no broker host"),
    ("mqtt://host:0", "outside 1..65535"),
    ("mqtt://host/topic", "must not have a path"),
])
def test_a_bad_broker_url_names_the_key_and_the_problem(url, says):
    with pytest.raises(SettingsError) as err:
        parse_settings({"mqtt": {"url": url}}, "site.toml")
    assert str(err.value).startswith(f"site.toml: mqtt.url = {url!r}: ") and says in str(err.value)


def test_certificates_need_mqtts_and_both_halves():
    with pytest.raises(SettingsError, match="use \"mqtts://\""):
        parse_settings({"mqtt": {"url": "mqtt://h", "ca_file": "ca.crt"}})
    with pytest.raises(SettingsError, match="needs both cert_file and key_file"):
        parse_settings({"mqtt": {"url": "mqtts://h", "cert_file": "c.crt"}})
    with pytest.raises(SettingsError, match="without wildcards"):
        parse_settings({"mqtt": {"url": "mqtt://h", "topic_prefix": "a/#"}})


def test_credentials_and_default_ports():
    s = parse_settings({"mqtt": {"url": "mqtts://u%40x:p%3Aw@broker"}}).mqtt
    assert (s.host, s.port, s.tls, s.credentials) == ("broker", 8883, True, ("u@x", "p:w"))
    s = parse_settings({"mqtt": {"url": "mqtt://u:p@broker", "password": "other"}}).mqtt
    assert (s.port, s.credentials) == (1883, ("u", "other"))


def test_run_with_a_bad_mqtt_setting_says_one_line_and_exits_2(tmp_path):
    settings = tmp_path / "s.toml"
    settings.write_text('[mqtt]\nurl = "mqtt://host:99999"\n')
    result = subprocess.run([sys.executable, "-m", "pm4324.cli.cli", "run", "--settings",
                             str(settings), "--seconds", "1"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "mqtt.url" in result.stderr


def test_the_dead_band_is_relative_and_energy_counts_every_change():
    old = {"seq": 1, "time": 1.0, "p_w": 1000.0, "kwh_import": 1.0, "flags": []}
    assert not changed(old, {**old, "seq": 2, "time": 2.0, "p_w": 1009.0}, 1.0)
    assert changed(old, {**old, "p_w": 1011.0}, 1.0)
    assert changed(old, {**old, "kwh_import": 1.0000001}, 1.0)
    assert changed(old, {**old, "flags": ["clipping"]}, 1.0)
    assert changed(None, old, 1.0)


def _reading(minute: int) -> dict:
    d = {"seq": minute * 60, "time": 1_800_000_000.0 + 60 * minute,
         "mains": [{"main": 1, "v_ln": [230.0, 231.0, 229.0], "v_ll": [], "frequency_hz": 50.0}],
         "meters": [{"meter": 1, "p_w": 10.0 * minute, "kwh_import": 0.5 * minute}],
         "cts": [{"ct": 1, "p_w": 1.0 * minute, "kwh_import": 0.1 * minute, "v_rms": 230.0}]}
    return minute_reading(d)


def test_the_buffer_keeps_the_newest_minutes_and_counts_what_it_dropped(tmp_path):
    buf = ForwardBuffer(tmp_path / "b.db", max_minutes=5)
    for minute in range(8):
        buf.append(_reading(minute))
    assert len(buf) == 5 and buf.dropped == 3
    rows = buf.oldest(10)
    assert [r["seq"] for _, r in rows] == [180, 240, 300, 360, 420]
    assert rows[0][1]["cts"] == [{"ct": 1, "p_w": 3.0, "kwh_import": 0.30000000000000004}]
    buf.remove([i for i, _ in rows[:2]])
    buf.close()
    again = ForwardBuffer(tmp_path / "b.db", max_minutes=5)  # survives a restart
    assert [r["seq"] for _, r in again.oldest(10)] == [300, 360, 420] and again.dropped == 3
    topic, payload = history_message(again.oldest(1)[0][1], "pm/x")
    assert topic == "pm/x/history" and json.loads(payload)["seq"] == 300
