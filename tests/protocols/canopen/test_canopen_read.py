"""`pm4324 read --canopen`: the same dict as `read` over Modbus, from the same second."""

from __future__ import annotations

import json
import math

import pytest
from canopen_helpers import NODE, factory

from pm4324.cli.cli import main
from pm4324.client.canopen import parse_canopen, read_canopen
from pm4324.client.modbus import read_meter
from pm4324.protocols.canopen import CanopenServer

modbus_reader = factory.backend_reader


def same(a, b, path="d"):
    """Equal, NaN-free JSON-like values (None where no data)."""
    if isinstance(b, dict):
        assert a.keys() == b.keys(), path
        for k in b:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(b, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(b, float) and math.isnan(b):
        assert isinstance(a, float) and math.isnan(a), path
    else:
        assert a == b, (path, a, b)


def test_canopen_and_modbus_agree(server, settings, meter):
    got = read_canopen("virtual", settings.canopen.channel, NODE)
    want = read_meter(modbus_reader(server.backend))
    same(got, want)
    assert got["seq"] == meter.snapshot.seq and got["relays"] == [False, True]


def test_chosen_meters_only(server, settings):
    got = read_canopen("virtual", settings.canopen.channel, NODE, [2, 7])
    assert [m["meter"] for m in got["meters"]] == [2, 7]
    assert [c["ct"] for c in got["cts"]] == [4, 5, 6, 19, 20, 21]


def test_a_real_meter_agrees_in_the_same_second(channel):
    """The simulated building: CANopen and Modbus read between two seconds are equal."""
    from dataclasses import replace

    from pm4324.config.settings import CanopenSettings, Settings
    from pm4324.device.meter import Meter
    from pm4324.sources.scenario_parse import load_scenario
    from pm4324.sources.simulator import SimulatorSource

    settings = replace(Settings(), canopen=CanopenSettings(node_id=9, interface="virtual",
                                                           channel=channel))
    meter = Meter(settings, SimulatorSource(load_scenario(None), settings), start_time=0.0)
    with CanopenServer(meter, settings) as node:
        for _ in range(2):
            snap = meter.step()
        got = read_canopen("virtual", channel, 9, [1, 8])
        want = read_meter(modbus_reader(node.backend), [1, 8])
    same(got, want)
    assert got["seq"] == snap.seq == 1
    assert got["cts"][0]["p_w"] == pytest.approx(snap.ct.p_w[0], rel=1e-6)
    assert got["meters"][1]["kwh_import"] == pytest.approx(snap.meter_energy.wh_import[7] / 1e3,
                                                          abs=0.006)


def test_cli_read_json(server, settings, capsys):
    assert main(["read", "--canopen", f"virtual:{settings.canopen.channel}", "--node", str(NODE),
                 "--meter", "3", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["model"] == "PM-4324A" and [m["meter"] for m in d["meters"]] == [3]


def test_cli_read_table(server, settings, capsys):
    assert main(["read", "--canopen", f"virtual:{settings.canopen.channel}", "--node",
                 str(NODE)]) == 0
    assert "Meter" in capsys.readouterr().out


def test_no_node_is_exit_2(channel, capsys):
    assert main(["read", "--canopen", f"virtual:{channel}", "--node", "9", "--timeout",
                 "0.2"]) == 2
    assert "does not answer" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--canopen", "virtual"], ["--canopen", "x:y", "--node", "0"],
                                  ["--canopen", "x:y", "--node", "128"]])
def test_bad_arguments(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(["read", *args])
    assert info.value.code == 2


def test_parse_canopen():
    assert parse_canopen("udp_multicast:239.74.163.2") == ("udp_multicast", "239.74.163.2")
    assert parse_canopen("socketcan:can0") == ("socketcan", "can0")
    with pytest.raises(ValueError):
        parse_canopen("can0")


def test_a_device_without_our_objects_still_gives_p_and_energy(server, settings, meter,
                                                               monkeypatch):
    """A real PM-4324-CPS has only the evidenced 0x3200/0x3201: those fill p_w and kWh."""
    from pm4324.protocols.canopen.codes import Abort, SdoAbort

    real_entry = server.entry

    def evidenced_only(index, sub):
        if 0x2000 <= index < 0x3000:
            raise SdoAbort(Abort.NO_OBJECT)
        return real_entry(index, sub)

    monkeypatch.setattr(server, "entry", evidenced_only)
    got = read_canopen("virtual", settings.canopen.channel, NODE, [1])
    snap = meter.snapshot
    assert got["seq"] is None and got["cts"][0]["v_rms"] is None
    assert got["cts"][0]["p_w"] == round(snap.ct.p_w[0])
    assert got["meters"][0]["kwh_import"] == pytest.approx(snap.meter_energy.wh_import[0] / 1e3,
                                                          abs=0.006)


def test_a_node_refusing_every_object_is_exit_1(server, settings, monkeypatch, capsys):
    from pm4324.protocols.canopen.codes import Abort, SdoAbort

    def nothing(index, sub):
        raise SdoAbort(Abort.NO_OBJECT)

    monkeypatch.setattr(server, "entry", nothing)
    assert main(["read", "--canopen", f"virtual:{settings.canopen.channel}", "--node",
                 str(NODE)]) == 1
    assert "refused every object" in capsys.readouterr().err


def test_a_failing_relay_driver_shows_in_the_canopen_status(channel, tmp_path):
    """Status.RELAY_DRIVER_FAILED reaches a CANopen master (python-canopen) as it reaches
    Modbus: the meter status object, decoded by the master into "status"."""
    from dataclasses import replace

    from pm4324.config.settings import CanopenSettings, Settings
    from pm4324.device.meter import Meter
    from pm4324.device.relays import GpioSysfsDriver
    from pm4324.sources.scenario_parse import load_scenario
    from pm4324.sources.simulator import SimulatorSource

    settings = replace(Settings(), canopen=CanopenSettings(node_id=9, interface="virtual",
                                                           channel=channel))
    driver = GpioSysfsDriver((5, 6), root=str(tmp_path))  # neither line exported
    meter = Meter(settings, SimulatorSource(load_scenario(None), settings), start_time=0.0,
                  driver=driver)
    with CanopenServer(meter, settings):
        meter.step()
        got = read_canopen("virtual", channel, 9, [1])
        for n in (5, 6):
            (tmp_path / f"gpio{n}").mkdir()
        for _ in range(3):  # retried after 1 s, then it works
            meter.step()
        again = read_canopen("virtual", channel, 9, [1])
    assert got["status"] == ["relay_driver_failed"]
    assert again["status"] == []
