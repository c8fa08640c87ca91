"""`pm4324 hub` publishing its meters to a real Mosquitto: each meter of the hub becomes an MQTT
node and a Home Assistant device of its own, with the values the hub read over Modbus."""

from __future__ import annotations

import json
import subprocess
import sys

from mqtt_helpers import Broker, Subscriber, wait_for
from software_meter import software_meters


def test_hub_publishes_each_meter_like_a_software_meter(broker: Broker, tmp_path):
    sub = Subscriber(broker.port, ["pm4324/#", "homeassistant/#"])
    with software_meters(tmp_path, 2) as meters:
        hub_toml = tmp_path / "hub.toml"
        hub_toml.write_text(
            f'[hub]\nhistory = "hub.db"\n\n[mqtt]\nurl = "mqtt://127.0.0.1:{broker.port}"\n\n'
            + "".join(f'[[meters]]\nkey = "m{k}"\ntcp = "127.0.0.1:{m.port}"\n\n'
                      for k, m in enumerate(meters)))
        hub = subprocess.Popen([sys.executable, "-m", "pm4324.cli.cli", "hub", str(hub_toml)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: sub.json("pm4324/hub-m0/ct/1") and sub.json("pm4324/hub-m1/ct/1"),
                     120, "both hub meters on MQTT")
            kwh = subprocess.run([sys.executable, "-m", "pm4324.cli.cli", "read", "--tcp",
                                  f"127.0.0.1:{meters[0].port}", "--json", "--meter", "1"],
                                 capture_output=True, text=True, timeout=30, check=True)
        finally:
            hub.terminate()
            hub.wait(60)
    sub.close()
    read = json.loads(kwh.stdout)["cts"][0]["kwh_import"]
    published = [p["kwh_import"] for t, p in sub.json("pm4324/hub-m0/ct/1") if t.endswith("/ct/1")]
    # the counter only grows: what the hub published brackets a later independent read
    assert published == sorted(published) and published[0] <= read
    configs = {t: p for t, p in sub.json("homeassistant/") if t.endswith("/config")}
    devices = {p["device"]["identifiers"][0] for p in configs.values()}
    assert devices == {"pm4324_hub-m0", "pm4324_hub-m1"}
    assert sub.received("pm4324/hub-m0/status")[-1][1] == b"offline"  # the hub stopped cleanly
