"""The physics level: each member's waveforms, simulated and measured by the real engine in
worker processes at 3.2 kS/s, read over Modbus, agree with its own scenario's exact truth
within the meter's accuracy; the energies are the engine's and survive a restart."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fleet_helpers import ct_address, f32, run_seconds, serving, small_fleet
from pymodbus.client import AsyncModbusTcpClient

from pm4324.fleet.expose import Backends, start_tcp
from pm4324.fleet.physics import PhysicsFleet
from pm4324.fleet.store import FleetStore

STEADY_CTS = (1, 2, 4, 7, 9, 13, 16, 22)  # loads that do not switch in the first seconds


def _open(config):
    return PhysicsFleet(config, FleetStore.open(config.store, [m.key for m in config.members]))


async def test_each_member_is_measured_from_its_own_waveforms(tmp_path):
    config = small_fleet(tmp_path, fleet={"store": str(tmp_path / "var" / "fleet"),
                                          "fidelity": "physics", "workers": 2})
    assert all(m.settings.sample_rate_hz == 3200 for m in config.members)
    fleet = _open(config)
    async with serving(fleet) as servers:
        await start_tcp(config, Backends(fleet.members), servers)
        await asyncio.to_thread(run_seconds, fleet, 3)
        k = fleet.published_k
        currents = set()
        for j, member in enumerate(config.members):
            truth = member.scenario.expected(member.settings, k + 0.5)
            client = AsyncModbusTcpClient("127.0.0.1", port=servers[j].port, timeout=2)
            await client.connect()
            try:
                for ct in STEADY_CTS:
                    rr = await client.read_input_registers(ct_address(ct), count=8, device_id=1)
                    row = truth[ct - 1]
                    assert f32(rr.registers, 0) == pytest.approx(row["v_rms"], rel=2e-3)
                    assert f32(rr.registers, 2) == pytest.approx(row["i_rms"], rel=5e-3)
                    assert f32(rr.registers, 4) == pytest.approx(row["p_w"] / 1000, rel=1e-2)
                    currents.add(round(f32(rr.registers, 2), 2))
            finally:
                client.close()
        assert len(currents) > 3 * len(STEADY_CTS)  # members differ
        energies = [m.snapshot.ct_energy.wh_import.copy() for m in fleet.members]
        assert all(e[0] > 0 for e in energies)
    again = _open(config)
    try:
        for e, m in zip(energies, again.members):
            assert np.array_equal(m.snapshot.ct_energy.wh_import, e)
    finally:
        again.close()
