"""`pm4324 export`: every generated file parses as its tool expects, and every register it
names, read from a running meter with pymodbus's client, equals the `--json` value of the
same second (so addresses, types and word order are right)."""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import tomllib

import pytest
import yaml

# How a register name's suffix maps to the --json key, written here independently of the
# exporter: key, and the factor from the --json unit to the register's unit.
JSON_OF = {"v": ("v_rms", 1), "i": ("i_rms", 1), "kw": ("p_w", 1e-3), "kvar": ("q_var", 1e-3),
           "kva": ("s_va", 1e-3), "pf": ("pf", 1), "kwh_import": ("kwh_import", 1),
           "kwh_export": ("kwh_export", 1), "hz": ("frequency_hz", 1)}
MAIN_OF = {"v_an": ("v_ln", 0), "v_bn": ("v_ln", 1), "v_cn": ("v_ln", 2), "hz": ("frequency_hz", None)}
HA_SENSOR_KEYS = {"name", "unique_id", "slave", "address", "input_type", "data_type", "swap",
                  "scan_interval", "precision", "unit_of_measurement", "device_class",
                  "state_class"}

PM4324_2CT = """
model = "PM-4324"
[meters.2]
wiring = "3P3W-2CT"
name = "Shop 3"
ct_names = ["Shop 3 lighting", "", "Shop 3 sockets"]
[meters.3]
wiring = "1P3W-2CT"
"""


def _export(kind: str, settings, port: int) -> str:
    out = subprocess.run([sys.executable, "-m", "pm4324.cli.cli", "export", kind, "--settings",
                          str(settings), "--port", str(port)], capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningMeter:
    def __init__(self, settings, port: int):
        self.lines: dict[int, dict] = {}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pm4324.cli.cli", "run", "--settings", str(settings), "--json",
             "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            d = json.loads(line)
            self.lines[d["seq"]] = d

    def line(self, seq: int) -> dict:
        deadline = time.monotonic() + 30
        while seq not in self.lines:
            assert time.monotonic() < deadline, f"no --json line for second {seq}"
            time.sleep(0.02)
        return self.lines[seq]


@pytest.fixture(scope="module", params=["PM-4324A", "PM-4324 2CT"])
def meter(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    settings = d / "s.toml"
    body = PM4324_2CT if request.param == "PM-4324 2CT" else ""
    settings.write_text(body + f'\n[store]\npath = "{d}/state.db"\n')
    port = _free_port()
    m = RunningMeter(settings, port)
    from pymodbus.client import ModbusTcpClient

    client = ModbusTcpClient("127.0.0.1", port=port, timeout=3)
    deadline = time.monotonic() + 120
    while not (client.connect() and m.lines):
        assert m.proc.poll() is None and time.monotonic() < deadline, "the meter did not start"
        time.sleep(0.1)
    yield settings, port, client, m, request.param
    client.close()
    m.proc.terminate()
    m.proc.wait(30)


def _read_float(client, address: int, swapped: bool) -> float:
    words = client.read_input_registers(address, count=2, device_id=1).registers
    hi, lo = (words[1], words[0]) if swapped else (words[0], words[1])
    return struct.unpack(">f", struct.pack(">HH", hi, lo))[0]


def _seq(client) -> int:
    lo, hi = client.read_input_registers(0x1006, count=2, device_id=1).registers
    return hi << 16 | lo


def _expected(line: dict, key: str) -> float:
    kind, number, suffix = re.fullmatch(r"(ct|meter|main)(\d+)_(\w+)", key).groups()
    if kind == "main":
        json_key, index = MAIN_OF[suffix]
        value = line["mains"][int(number) - 1][json_key]
        return value[index] if index is not None else value
    json_key, factor = JSON_OF[suffix]
    group = line["cts" if kind == "ct" else "meters"]
    element = next(e for e in group if e[kind] == int(number))
    return element[json_key] * factor


def _check_against_json(client, m, registers: list[tuple[str, int, bool]]) -> None:
    """Read all registers within one second of the meter (retried) and compare."""
    for _ in range(20):
        before = _seq(client)
        values = [(key, _read_float(client, a, swapped)) for key, a, swapped in registers]
        if _seq(client) == before:
            break
    else:
        pytest.fail("could not read the registers within one second")
    line = m.line(before)
    for key, got in values:
        want = _expected(line, key)
        if want is None:
            assert math.isnan(got), key
        else:
            assert got == pytest.approx(want, rel=2e-7, abs=1e-9), key


def test_home_assistant_yaml(meter):
    settings, port, client, m, model = meter
    doc = yaml.safe_load(_export("home-assistant", settings, port))
    hub = doc["modbus"][0]
    assert (hub["type"], hub["host"], hub["port"]) == ("tcp", "127.0.0.1", port)
    sensors = hub["sensors"]
    for s in sensors:  # the keys and values HA's modbus sensor schema accepts
        assert set(s) <= HA_SENSOR_KEYS and s["input_type"] == "input"
        assert s["data_type"] == "float32" and s["swap"] in ("none", "byte", "word", "word_byte")
    keys = [s["unique_id"].removeprefix("pm4324_") for s in sensors]
    assert len(set(keys)) == len(keys)
    _check_against_json(client, m, [(k, s["address"], s["swap"] == "word")
                                    for k, s in zip(keys, sensors)])
    if model == "PM-4324 2CT":
        assert "ct5_kw" not in keys and "ct9_kw" not in keys and "ct4_kw" in keys
        labels = {k: s["name"] for k, s in zip(keys, sensors)}
        assert labels["meter2_kw"] == "Meter 2 (Shop 3) power"
        assert labels["ct6_kwh_import"] == "CT 6 (Shop 3 sockets) energy import"
        assert not any(k.startswith("main2") for k in keys)
    else:
        assert "ct24_kwh_export" in keys and "main2_hz" in keys


def test_telegraf_conf(meter):
    settings, port, client, m, _ = meter
    conf = tomllib.loads(_export("telegraf", settings, port))["inputs"]["modbus"][0]
    assert conf["controller"] == f"tcp://127.0.0.1:{port}" and conf["slave_id"] == 1
    regs = conf["input_registers"]
    for r in regs:
        assert r["data_type"] == "FLOAT32-IEEE" and r["address"][1] == r["address"][0] + 1
    _check_against_json(client, m, [(r["name"], r["address"][0], r["byte_order"] == "CDAB")
                                    for r in regs])


def test_evcc_yaml(meter):
    settings, port, client, m, _ = meter
    entry = yaml.safe_load(_export("evcc", settings, port))["meters"][0]
    assert entry["type"] == "custom"
    power = entry["power"]
    assert power["uri"] == f"127.0.0.1:{port}" and power["register"]["type"] == "input"
    swapped = power["register"]["decode"] == "float32s"
    w = _read_float(client, power["register"]["address"], swapped) * power["scale"]
    line = m.line(_seq(client))
    assert w == pytest.approx(line["meters"][0]["p_w"], rel=0.2)  # power moves between reads
    _check_against_json(client, m, [("meter1_kwh_import", entry["energy"]["register"]["address"],
                                     swapped)])


def test_register_map_json(meter):
    settings, port, client, m, _ = meter
    doc = json.loads(_export("register-map", settings, port))
    regs = doc["registers"]
    assert all(r["function"] == 4 and r["type"] == "float32" for r in regs)
    _check_against_json(client, m, [(r["name"], r["address"], r["word_order"] == "low-first")
                                    for r in regs])


def test_node_red_flow_decodes_in_node(meter, tmp_path):
    """The flow's own decode functions, run by Node.js on words read from the meter."""
    settings, port, client, m, _ = meter
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    flow = json.loads(_export("node-red", settings, port))
    reads = {n["id"]: n for n in flow if n["type"] == "modbus-read"}
    functions = {n["id"]: n for n in flow if n["type"] == "function"}
    assert reads and all(n["server"] == "pm4324_client" for n in reads.values())
    for _ in range(20):
        before = _seq(client)
        words = {rid: client.read_input_registers(int(r["adr"]), count=int(r["quantity"]),
                                                  device_id=1).registers
                 for rid, r in reads.items()}
        if _seq(client) == before:
            break
    line = m.line(before)
    script = tmp_path / "decode.js"
    parts = []
    for rid, r in reads.items():
        func = functions[r["wires"][0][0]]["func"]
        parts.append(f"out.push(...(function(msg){{{func}}})({{payload: {json.dumps(words[rid])}}})[0]);")
    script.write_text("const out = [];\n" + "\n".join(parts) + "\nconsole.log(JSON.stringify(out));\n")
    decoded = json.loads(subprocess.run(["node", str(script)], capture_output=True, text=True,
                                        check=True, timeout=60).stdout)
    assert len(decoded) == sum(len(json.loads(re.search(r"const fields = (.*);", functions[
        r["wires"][0][0]]["func"]).group(1))) for r in reads.values())
    for msg in decoded:
        want = _expected(line, msg["topic"])
        if want is None:
            assert msg["payload"] is None  # NaN prints as null in JSON
        else:
            assert msg["payload"] == pytest.approx(want, rel=2e-7, abs=1e-9), msg["topic"]


def test_grafana_dashboard_queries_metrics_that_metrics_serves():
    """Every family a panel queries, and every label its legend names, is on a real
    /metrics page (rendered by the web server's exporter, parsed by prometheus_client)."""
    from prometheus_client.parser import text_string_to_metric_families
    from snapshot_factory import make_snapshot

    from pm4324.registers.exports.grafana import METRICS, dashboard
    from pm4324.web.metrics import render

    page = render([("local", make_snapshot())])
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    board = dashboard()
    assert board["templating"]["list"][1]["query"] == "label_values(pm4324_up, meter)"
    used = set()
    for panel in board["panels"]:
        assert panel["datasource"]["type"] == "prometheus" and panel["targets"]
        for target in panel["targets"]:
            name = re.search(r"(pm4324_\w+)\{", target["expr"]).group(1)
            used.add(name)
            assert name in labels, f"{panel['title']}: {name} is not on /metrics"
            for label in re.findall(r"\{\{(\w+)\}\}", target["legendFormat"]):
                assert label in labels[name], f"{panel['title']}: no label {label} on {name}"
            for label in re.findall(r'(\w+)=~?"', target["expr"]):
                assert label in labels[name], f"{panel['title']}: no label {label} on {name}"
    assert used == set(METRICS)
