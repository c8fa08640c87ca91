"""The fleet behind one gateway port, on one RTU line and on one CAN bus, against real
peers: mbpoll (libmodbus) polls many unit ids through the gateway and through the RTU line
(a socat pty pair), pymodbus's serial client reads two units, python-canopen reads two node
ids; every value is that member's own truth, and another unit id is told apart."""

from __future__ import annotations

import asyncio
import re
import struct
import uuid
from pathlib import Path

import pytest
from fleet_helpers import ct_address, f32, open_fleet, run_seconds, serving, small_fleet
from pymodbus.client import AsyncModbusSerialClient

from peers import LIMIT, run_peer
from pm4324.fleet.expose import Backends, start_canopen, start_rtu, start_tcp

FLOATS = re.compile(r"^\[\d+\]:\s+(\S+)", re.M)


async def _mbpoll(*args: str) -> tuple[int, list[float], str]:
    rc, out, err = await run_peer(*args)
    return rc, [float(x) for x in FLOATS.findall(out)], err


def _truth(fleet, j: int, ct: int) -> list[float]:
    m = fleet.config.members[j]
    row = m.scenario.expected(m.settings, fleet.published_k + 0.5)[ct - 1]
    return [row["v_rms"], row["i_rms"], row["p_w"] / 1000]


async def test_mbpoll_polls_every_unit_through_the_gateway(tmp_path, mbpoll):
    fleet = open_fleet(small_fleet(tmp_path, modbus={"mode": "gateway", "port": 0}))
    async with serving(fleet) as servers:
        await start_tcp(fleet.config, Backends(fleet.members), servers)
        assert len(servers) == 1
        await asyncio.to_thread(run_seconds, fleet, 2)
        port = str(servers[0].port)
        for unit in range(1, len(fleet.members) + 1):
            rc, got, err = await _mbpoll(mbpoll, "-m", "tcp", "-p", port, "-a", str(unit), "-0",
                                         "-1", "-o", "2", "-t", "3:float", "-r",
                                         str(ct_address(4)), "-c", "3", "127.0.0.1")
            assert rc == 0, err
            assert got == pytest.approx(_truth(fleet, unit - 1, 4), rel=1e-5)
        rc, _, err = await _mbpoll(mbpoll, "-m", "tcp", "-p", port, "-a", "9", "-0", "-1", "-o",
                                   "2", "-t", "3", "-r", "0x1100", "127.0.0.1")
        assert rc != 0 and "Target device failed to respond" in err


async def test_rtu_line_mbpoll_and_pymodbus(tmp_path, mbpoll, pty_pair):
    server_port, client_port = pty_pair
    fleet = open_fleet(small_fleet(tmp_path, rtu={"device": server_port}, modbus={"mode": "off"}))
    async with serving(fleet) as servers:
        await start_rtu(fleet.config, Backends(fleet.members), servers)
        await asyncio.to_thread(run_seconds, fleet, 2)
        for unit in (1, 2, 4):
            rc, got, err = await _mbpoll(mbpoll, "-m", "rtu", "-b", "19200", "-P", "none", "-d",
                                         "8", "-s", "1", "-a", str(unit), "-1", "-0", "-o", "2",
                                         "-t", "3:float", "-r", str(ct_address(7)), "-c", "3",
                                         client_port)
            assert rc == 0, err
            assert got == pytest.approx(_truth(fleet, unit - 1, 7), rel=1e-5)
        client = AsyncModbusSerialClient(client_port, baudrate=19200, bytesize=8, parity="N",
                                         stopbits=1, timeout=2, retries=0)
        assert await asyncio.wait_for(client.connect(), LIMIT)
        try:
            for unit in (2, 3):
                rr = await client.read_input_registers(ct_address(1), count=6, device_id=unit)
                assert not rr.isError(), rr
                got = [f32(rr.registers, 2 * k) for k in range(3)]
                assert got == pytest.approx(_truth(fleet, unit - 1, 1), rel=1e-5)
        finally:
            client.close()
        rc, _, err = await _mbpoll(mbpoll, "-m", "rtu", "-b", "19200", "-P", "none", "-a", "9",
                                   "-1", "-0", "-o", "0.3", "-t", "3", "-r", "0", client_port)
        assert rc != 0 and "timed out" in err.lower()  # no meter 9 on the line: silence


async def test_canopen_two_node_ids_on_one_bus(tmp_path):
    import canopen

    channel = f"fleet-{uuid.uuid4().hex[:10]}"
    config = small_fleet(tmp_path, canopen={"interface": "virtual", "channel": channel},
                         modbus={"mode": "off"})
    fleet = open_fleet(config)
    servers: list = []
    network = canopen.Network()
    network.NOTIFIER_CYCLE = 0.1
    try:
        await start_canopen(config, fleet.members, Backends(fleet.members), servers,
                            fleet.store.meter_ids, fleet.faults.protocol)
        await asyncio.to_thread(run_seconds, fleet, 2)
        network.connect(interface="virtual", channel=channel)
        eds = str(Path(__file__).resolve().parents[2] / "docs" / "pm4324a-cps.eds")
        serials = set()
        for node_id in (1, 3):
            node = network.add_node(node_id, eds)
            node.sdo.RESPONSE_TIMEOUT = 2.0

            def read(index: int, sub: int, node=node):
                return node.sdo.upload(index, sub)

            seq = int.from_bytes(await asyncio.to_thread(read, 0x2002, 0), "little")
            assert seq == fleet.published_k
            v = struct.unpack("<f", await asyncio.to_thread(read, 0x2200, 2))[0]
            i = struct.unpack("<f", await asyncio.to_thread(read, 0x2201, 2))[0]
            assert [v, i] == pytest.approx(_truth(fleet, node_id - 1, 2)[:2], rel=1e-6)
            serials.add(await asyncio.to_thread(read, 0x1018, 4))
        assert len(serials) == 2  # each member its own identity
        # heartbeat loss on node 1 only: node 3 keeps beating (50 ms producer times)
        fleet.faults.protocol[0].set("heartbeat_loss")
        nodes = {n: network[n] for n in (1, 3)}
        for node in nodes.values():
            await asyncio.to_thread(node.sdo.download, 0x1017, 0, (50).to_bytes(2, "little"))
        assert await asyncio.to_thread(nodes[3].nmt.wait_for_heartbeat, 2.0)
        with pytest.raises(canopen.nmt.NmtError):
            await asyncio.to_thread(nodes[1].nmt.wait_for_heartbeat, 0.5)
        fleet.faults.protocol[0].clear()
        assert await asyncio.to_thread(nodes[1].nmt.wait_for_heartbeat, 2.0)
    finally:
        network.disconnect()
        for s in servers:
            await s.stop()
        fleet.close()
