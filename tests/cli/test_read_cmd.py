"""`pm4324 read` and `pm4324 registers`: the client decodes what the map serves.

The client is checked three ways: straight against ``MapBackend`` (decoding), against the
project's Modbus TCP server on a free port (the whole path, as a user runs it), and against
a backend that refuses our [ours] blocks as a real PM-4324 may.
"""

from __future__ import annotations

import asyncio
import json
import socket

import numpy as np
import pytest
import snapshot_factory as factory  # tests/registers, on pytest's pythonpath

from pm4324.cli import read_cmd, registers_cmd
from pm4324.cli.cli import main
from pm4324.client.modbus import read_meter, read_reading
from pm4324.registers import docs
from pm4324.registers.image import MapBackend
from pm4324.registers.table import load_map, map_text

LIMIT = 20.0  # seconds: the bound on any end-to-end run

backend_reader = factory.backend_reader
assert_same = factory.assert_same


@pytest.fixture
def snapshot():
    return factory.make_snapshot()


@pytest.fixture
def backend(snapshot):
    return MapBackend(factory.FakeMeter(snapshot.settings, snapshot))


def test_decodes_to_the_keys_and_values_of_to_dict(backend, snapshot):
    d = read_meter(backend_reader(backend))
    assert_same(d, snapshot.to_dict())
    assert d["cts"][5]["thd_i_pct"] is None  # NaN in the snapshot: None, as to_dict
    assert d["cts"][4]["lead_lag"] == "" and d["meters"][0]["wiring"] == "3P4W-3CT"


def test_real_meter_snapshot_round_trip():
    """The simulated building, through the map and back, equals what `run --json` prints."""
    from pm4324.cli.cli import _default_settings_path
    from pm4324.config.settings_parse import load_settings
    from pm4324.device.meter import Meter
    from pm4324.sources.scenario_parse import load_scenario
    from pm4324.sources.simulator import SimulatorSource

    settings = load_settings(_default_settings_path())
    meter = Meter(settings, SimulatorSource(load_scenario(None), settings), start_time=0.0)
    backend = MapBackend(meter)
    for _ in range(3):
        snap = meter.step()
    assert_same(read_meter(backend_reader(backend)), snap.to_dict())


def test_meter_filter_reads_only_that_meter(backend, snapshot):
    calls = []

    def read(table, address, count):
        calls.append((table, address, count))
        return backend_reader(backend)(table, address, count)

    d = read_meter(read, [3])
    assert_same(d, snapshot.to_dict([3]))
    assert all(not 0x1100 <= a < 0x1300 and not 0x1400 <= a < 0x1900 for _, a, _ in calls)
    assert all(n <= 125 for _, _, n in calls)


def test_pm4324_has_one_main():
    from pm4324.config.settings import Settings

    s = Settings(model="PM-4324", mains=(Settings().mains[0],))
    snap = factory.make_snapshot(s)
    d = read_meter(backend_reader(MapBackend(factory.FakeMeter(s, snap))))
    assert_same(d, snap.to_dict())


class RealDevice:
    """A backend that answers only evidenced rows, as a real PM-4324 without our blocks."""

    def __init__(self, backend: MapBackend):
        self.backend = backend
        self.refused = 0

    def read(self, table, address, count):
        m = load_map()
        for a in range(address, address + count):
            p = m.at(table, a)
            if p is None or not p.evidenced:
                self.refused += 1
                return None
        return backend_reader(self.backend)(table, address, count)


def test_refused_ours_blocks_do_not_stop_the_evidenced_reads(backend, snapshot):
    device = RealDevice(backend)
    d = read_meter(device.read)
    want = snapshot.to_dict()
    assert device.refused > 0
    for got, exp in zip(d["cts"], want["cts"], strict=True):
        for key in ("v_rms", "i_rms", "p_w", "q_var", "s_va", "frequency_hz"):
            assert got[key] == pytest.approx(exp[key], rel=1e-6)
        assert got["pf"] is None and got["kwh_import"] is None and got["flags"] is None
    assert d["meters"][7]["wiring"] == "3P4W-3CT" and d["relays"] == [False, True]
    assert d["model"] is None and d["seq"] is None and d["mains"][0]["v_ln"] == [None] * 3


def test_a_device_that_refuses_everything():
    assert read_meter(lambda table, address, count: None) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10.0.0.5", ("10.0.0.5", 502)), ("meter:5020", ("meter", 5020)),
     ("[::1]:1502", ("::1", 1502)), ("::1", ("::1", 502)), ("[fe80::1]", ("fe80::1", 502))],
)
def test_parse_host_port(text, expected):
    assert read_cmd.parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["", ":502", "host:0", "host:99999", "host:x"])
def test_parse_host_port_rejects(text):
    with pytest.raises(Exception, match="HOST"):
        read_cmd.parse_host_port(text)


# -- end to end over Modbus TCP ----------------------------------------------------------------


async def run_cli(argv: list[str]) -> int:
    return await asyncio.wait_for(asyncio.to_thread(main, argv), LIMIT)


@pytest.fixture
async def server(backend):
    from pm4324.protocols.modbus import TcpServer

    srv = TcpServer(backend, unit_id=1, port=0)
    await srv.start()
    yield srv
    await srv.stop()


async def test_read_json_over_tcp(server, snapshot, capsys):
    rc = await run_cli(["read", "--tcp", f"127.0.0.1:{server.port}", "--json"])
    out = capsys.readouterr()
    assert rc == 0 and out.err == ""
    assert_same(json.loads(out.out), snapshot.to_dict())


async def test_read_table_over_tcp(server, snapshot, capsys):
    from pm4324.cli.display import digits_for, render_table

    rc = await run_cli(["read", "--tcp", f"127.0.0.1:{server.port}", "--meter", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    reading = read_reading(backend_reader(server.backend), [2])
    digits = digits_for(reading.kwh_resolution)
    assert out == render_table(reading.values, energy_digits=digits) + "\n"


async def test_read_high_word_first(server, snapshot, capsys):
    server.backend.write_registers(0x1012, [1])
    port = f"127.0.0.1:{server.port}"
    assert await run_cli(["read", "--tcp", port, "--json", "--word-order", "high-first"]) == 0
    assert_same(json.loads(capsys.readouterr().out), snapshot.to_dict())


async def test_wrong_unit_is_refused_with_exit_1(server, capsys):
    rc = await run_cli(["read", "--tcp", f"127.0.0.1:{server.port}", "--unit", "9"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "refused every request" in err


async def test_connection_refused_is_one_line_and_exit_2(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    rc = await run_cli(["read", "--tcp", f"127.0.0.1:{port}", "--timeout", "0.5"])
    err = capsys.readouterr().err
    assert rc == 2 and err == (f"pm4324 read: cannot connect to 127.0.0.1:{port} (nothing "
                               "answers there: is the meter running? the software meter "
                               "listens on 127.0.0.1:5020)\n")


async def test_timeout_is_one_line_and_exit_2(capsys):
    with socket.socket() as s:  # the kernel completes the connection; nobody ever answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc = await run_cli(["read", "--tcp", f"127.0.0.1:{port}", "--timeout", "0.2"])
    err = capsys.readouterr().err
    assert rc == 2 and err == f"pm4324 read: 127.0.0.1:{port}: no answer from unit 1\n"


async def test_read_json_over_rtu(backend, snapshot, pty_pair, capsys):
    from pm4324.protocols.modbus import RtuServer

    server_port, client_port = pty_pair
    async with RtuServer(backend, server_port, address=1, baud=19200, data_format="N81"):
        rc = await run_cli(["read", "--rtu", client_port, "--baud", "19200", "--format", "N81",
                            "--unit", "1", "--meter", "8", "--json"])
    assert rc == 0
    assert_same(json.loads(capsys.readouterr().out), snapshot.to_dict([8]))


# -- pm4324 registers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("csv", map_text), ("md", lambda: docs.outputs()["docs/registers.md"]),
     ("json", lambda: docs.outputs()["docs/registers.json"])],
)
def test_registers_command(tmp_path, capsys, fmt, expected):
    assert main(["registers", "--format", fmt]) == 0
    assert capsys.readouterr().out == expected()
    out = tmp_path / f"map.{fmt}"
    assert main(["registers", "--format", fmt, "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == expected()


def test_registers_command_unwritable_output(tmp_path, capsys):
    assert main(["registers", "--output", str(tmp_path / "no" / "such" / "file")]) == 2
    assert capsys.readouterr().err.startswith("pm4324 registers: cannot write")


def test_render_is_the_same_view(tmp_path):
    assert registers_cmd.render("csv") == map_text()


# -- word order, resolution, why a port cannot be used -----------------------------------------


@pytest.mark.parametrize(("served", "asked"), [("low-first", "high-first"),
                                               ("high-first", "low-first")])
async def test_wrong_word_order_is_detected_and_named(server, capsys, served, asked):
    if served == "high-first":
        server.backend.write_registers(0x1012, [1])
    rc = await run_cli(["read", "--tcp", f"127.0.0.1:{server.port}", "--word-order", asked])
    out = capsys.readouterr()
    assert rc == 2 and out.out == "" and out.err.count("\n") == 1, out.err
    assert out.err.startswith(f"pm4324 read: with --word-order {asked} the meter's values make "
                              "no sense (")
    assert out.err.endswith(f": the meter seems to use {served}, so give --word-order {served}\n")


def test_energies_come_from_the_finer_float_registers(backend, snapshot):
    """0.01 kWh integers and float32 both serve each energy: the finer one is shown."""
    d = read_meter(backend_reader(backend))
    want = snapshot.to_dict()
    for got, exp in ((d["cts"][0], want["cts"][0]), (d["meters"][1], want["meters"][1])):
        spacing = float(np.spacing(np.float32(exp["kwh_import"])))
        assert abs(got["kwh_import"] - exp["kwh_import"]) <= spacing / 2 + 1e-9
        assert round(exp["kwh_import"], 2) != exp["kwh_import"]  # the integer would differ


def test_table_shows_the_resolution_the_meter_gives(backend):
    from pm4324.cli.display import digits_for, render_table

    assert [digits_for(r) for r in (0.01, 0.0078, 0.00049, None, 1.0)] == [2, 3, 4, 4, 0]
    reading = read_reading(backend_reader(backend), [2])
    kwh = reading.values["cts"][0]["kwh_import"]
    table = render_table(reading.values, energy_digits=2)
    assert f"{kwh:.2f}" in table and f"{kwh:.4f}" not in table


def test_rtu_device_missing_or_a_directory(tmp_path, capsys):
    assert main(["read", "--rtu", str(tmp_path / "ttyUSB9")]) == 2
    assert capsys.readouterr().err == (f"pm4324 read: serial device {tmp_path / 'ttyUSB9'} does "
                                       "not exist (ls /dev/ttyUSB* /dev/ttyS* lists them)\n")
    assert main(["read", "--rtu", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"pm4324 read: {tmp_path} is a directory, not a serial "
                                       "device\n")


async def test_rtu_line_setting_a_pty_refuses(pty_pair, capsys):
    _, client_port = pty_pair
    rc = await run_cli(["read", "--rtu", client_port, "--format", "E81", "--timeout", "0.3"])
    err = capsys.readouterr().err
    if rc != 2 or "does not accept" not in err:
        pytest.skip(f"this kernel's ptys accept even parity: {err.strip()}")
    assert err == (f"pm4324 read: {client_port} does not accept 19200 E81 (it is not a serial "
                   "port, or a pseudo-terminal that cannot set parity/stop bits)\n")
