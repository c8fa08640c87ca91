"""The truth level against real peers: every member's registers, read with pymodbus's client
and with mbpoll (libmodbus) on its own port, equal its own scenario's exact truth; the
energies are the truth's integral and survive a restart."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest
from fleet_helpers import ct_address, f32, open_fleet, run_seconds, serving, small_fleet
from pymodbus.client import AsyncModbusTcpClient

from peers import run_peer
from pm4324.fleet.expose import Backends, start_tcp

SECONDS = 3


async def _serve(fleet, servers):
    await start_tcp(fleet.config, Backends(fleet.members), servers)
    return [s.port for s in servers]


async def _read(port: int, address: int, count: int) -> list[int]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2)
    await client.connect()
    try:
        rsp = await client.read_input_registers(address, count=count, device_id=1)
        assert not rsp.isError(), rsp
        return rsp.registers
    finally:
        client.close()


async def test_each_member_serves_its_own_truth(tmp_path):
    config = small_fleet(tmp_path)
    fleet = open_fleet(config)
    async with serving(fleet) as servers:
        ports = await _serve(fleet, servers)
        await asyncio.to_thread(run_seconds, fleet, SECONDS)
        k = fleet.published_k
        assert k == SECONDS - 1
        seen = set()
        for j, member in enumerate(config.members):
            truth = member.scenario.expected(member.settings, k + 0.5)
            words = await _read(ports[j], 0x1006, 2)
            assert words[0] | words[1] << 16 == k  # snapshot_seq
            for ct in (1, 5, 7, 8, 14, 22):
                w = await _read(ports[j], ct_address(ct), 8)
                row = truth[ct - 1]
                assert f32(w, 0) == pytest.approx(row["v_rms"], rel=1e-6)
                assert f32(w, 2) == pytest.approx(row["i_rms"], rel=1e-6)
                assert f32(w, 4) == pytest.approx(row["p_w"] / 1000, rel=1e-6, abs=1e-9)
                assert f32(w, 6) == pytest.approx(row["q_var"] / 1000, rel=1e-6, abs=1e-9)
                seen.add(round(f32(w, 2), 3))
        assert len(seen) > 12  # the members differ (seeds, load factors)


async def test_mbpoll_reads_members_on_their_ports(tmp_path, mbpoll):
    config = small_fleet(tmp_path)
    fleet = open_fleet(config)
    async with serving(fleet) as servers:
        ports = await _serve(fleet, servers)
        await asyncio.to_thread(run_seconds, fleet, 2)
        for j in (0, 3):
            rc, out, err = await run_peer(
                mbpoll, "-m", "tcp", "-p", str(ports[j]), "-a", "1", "-0", "-1", "-o", "2",
                "-t", "3:float", "-r", str(ct_address(1)), "-c", "3", "127.0.0.1")
            assert rc == 0, err
            got = [float(x) for x in re.findall(r"^\[\d+\]:\s+(\S+)", out, re.M)]
            member = config.members[j]
            row = member.scenario.expected(member.settings, fleet.published_k + 0.5)[0]
            assert got == pytest.approx([row["v_rms"], row["i_rms"], row["p_w"] / 1000],
                                        rel=1e-5)


def test_energy_is_the_truths_integral_and_survives_a_restart(tmp_path):
    config = small_fleet(tmp_path)
    fleet = open_fleet(config)
    run_seconds(fleet, SECONDS)
    for j, member in enumerate(config.members):
        snap = fleet.members[j].snapshot
        p = np.array([[r["p_w"] for r in member.scenario.expected(member.settings, k + 0.5)]
                      for k in range(SECONDS)])  # (seconds, 24)
        assert snap.ct_energy.wh_import == pytest.approx(np.where(p > 0, p, 0).sum(0) / 3600,
                                                         rel=1e-9, abs=1e-9)
        assert snap.ct_energy.wh_export == pytest.approx(np.where(p < 0, -p, 0).sum(0) / 3600,
                                                         rel=1e-9, abs=1e-9)
    before = [(m.snapshot.ct_energy, m.snapshot.meter_energy) for m in fleet.members]
    ids = fleet.store.meter_ids
    fleet.close()
    again = open_fleet(config)
    assert again.store.meter_ids == ids
    for (ct, meter), m in zip(before, again.members):
        snap = m.snapshot  # the power-up snapshot: restored energies, no data yet
        assert snap.seq == -1
        assert np.array_equal(snap.ct_energy.wh_import, ct.wh_import)
        assert np.array_equal(snap.meter_energy.vah, meter.vah)
    again.close()
