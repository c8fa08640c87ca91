"""/metrics parsed by prometheus_client's own parser, and scraped by a real Prometheus server."""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from web_helpers import which

NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def families(live) -> dict:
    with live.http() as http:
        r = http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def sample(fam, **labels) -> float:
    (value,) = [s.value for s in fam.samples if all(s.labels.get(k) == v for k, v in labels.items())]
    return value


def test_metrics_follow_prometheus_naming_and_hold_the_snapshot(live):
    snap = live.step()
    fams = families(live)
    for name, fam in fams.items():
        assert NAME.match(name) and name.startswith("pm4324_")
        if fam.type == "counter":
            assert all(s.name.endswith("_total") for s in fam.samples)
    p = fams["pm4324_ct_active_power_watts"]
    assert len(p.samples) == 24 and p.type == "gauge"
    assert sample(p, ct="5", submeter="2", phase="b", main="1", meter="local") == float(snap.ct.p_w[4])
    energy = fams["pm4324_ct_active_energy_joules"]  # the parser drops _total from a counter's name
    assert energy.type == "counter"
    assert sample(energy, ct="5", direction="import") == pytest.approx(
        float(snap.ct_energy.wh_import[4]) * 3600, rel=1e-12)
    q = fams["pm4324_submeter_reactive_energy_var_seconds"]
    assert sample(q, submeter="1", quadrant="2") == pytest.approx(float(snap.meter_energy.varh_q2[0]) * 3600)
    thd = fams["pm4324_ct_current_thd_ratio"]
    assert sample(thd, ct="4") == pytest.approx(float(snap.ct.thd_i_pct[3]) / 100)
    v = fams["pm4324_main_voltage_volts"]
    assert sample(v, main="2", phase="c") == float(snap.main.v_ln[1][2])
    assert sample(fams["pm4324_up"], meter="local") == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _query(base: str, promql: str) -> list:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)["data"]["result"]


def test_a_real_prometheus_scrapes_the_meter(live, tmp_path):
    prometheus = which("prometheus")
    snap = live.step()
    port = _free_port()
    target = f"127.0.0.1:{live.web.port}"
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: pm4324\n    static_configs:\n      - targets: ['{target}']\n")
    proc = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        result: list = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not result:  # bounded: until the first scrape lands
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                result = _query(base, 'pm4324_ct_active_power_watts{ct="1"}')
            except OSError:
                result = []
            if not result:
                time.sleep(0.2)
        assert result, "Prometheus stored no sample in 60 s"
        assert float(result[0]["value"][1]) == pytest.approx(float(snap.ct.p_w[0]), rel=1e-12)
        assert result[0]["metric"]["job"] == "pm4324" and result[0]["metric"]["submeter"] == "1"
        up = _query(base, f'up{{instance="{target}"}}')
        assert up and up[0]["value"][1] == "1"  # the scrape parsed without error
        energy = _query(base, 'pm4324_submeter_active_energy_joules_total{submeter="1",direction="import"}')
        assert float(energy[0]["value"][1]) == pytest.approx(float(snap.meter_energy.wh_import[0]) * 3600)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_missing_values_are_nan_and_a_meter_without_a_second_is_down():
    from dataclasses import replace

    import numpy as np
    from snapshot_factory import make_snapshot

    from pm4324.web.metrics import render

    snap = make_snapshot()
    p = np.array(snap.ct.p_w, dtype=float)
    p[2] = np.nan
    snap = replace(snap, ct=replace(snap.ct, p_w=p))
    fams = {f.name: f for f in text_string_to_metric_families(render([("a", snap), ("b", None)]))}
    assert math.isnan(sample(fams["pm4324_ct_active_power_watts"], meter="a", ct="3"))
    assert sample(fams["pm4324_ct_active_power_watts"], meter="a", ct="4") == float(p[3])
    assert sample(fams["pm4324_up"], meter="b") == 0
    assert not [s for s in fams["pm4324_ct_active_power_watts"].samples if s.labels["meter"] == "b"]
