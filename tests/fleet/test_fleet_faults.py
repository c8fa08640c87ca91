"""Faults addressed per member: scheduled in the fleet file or set live by key, visible in
that member's values exactly as its scenario's truth with those faults says (read over the
gateway with pymodbus), logged as JSON lines with the meter's key; the energy_rollover
device fault presets the member's counters; the physics level applies them to waveforms."""

from __future__ import annotations

import asyncio
import json

import pytest
from fleet_helpers import ct_address, f32, open_fleet, run_seconds, serving, small_fleet
from pymodbus.client import AsyncModbusTcpClient

from pm4324.fleet.expose import Backends, start_tcp
from pm4324.fleet.faults import ROLLOVER_KWH
from pm4324.fleet.physics import PhysicsFleet
from pm4324.fleet.store import FleetStore
from pm4324.sources.faults import FaultError

FAULTS = [{"meter": "m2", "kind": "reversed_ct", "target": "ct1", "start_s": 1, "end_s": 3},
          {"meters": ["solo"], "kind": "energy_rollover", "target": "meter1",
           "below_kwh": 0.5}]


def _values(snap, ct: int) -> list[float]:
    k = ct - 1
    return [snap.ct.v_rms[k], snap.ct.i_rms[k], snap.ct.p_w[k], snap.ct.q_var[k]]


def _truth(member, t: float, ct: int, faults=None) -> list[float]:
    row = member.scenario.expected(member.settings, t, faults)[ct - 1]
    return [row["v_rms"], row["i_rms"], row["p_w"], row["q_var"]]


async def test_faults_per_member_truth_log_and_rollover(tmp_path):
    config = small_fleet(tmp_path, faults=FAULTS, modbus={"mode": "gateway", "port": 0})
    fleet = open_fleet(config)
    seen: dict[int, object] = {}
    fleet.members[1].add_listener(lambda snap: seen.setdefault(snap.seq, snap))
    with pytest.raises(FaultError):
        fleet.faults.set("m1", "open_ct", "ct99")
    live = fleet.faults.set("m1", "open_ct", "ct4")
    fleet.faults.set("m3", "wrong_phase", "ct2", {"phase": "c"}, duration_s=2)
    async with serving(fleet) as servers:
        await start_tcp(config, Backends(fleet.members), servers)
        await asyncio.to_thread(run_seconds, fleet, 4)
        m2 = config.members[1]
        for k in (1, 2):  # reversed during seconds 1 and 2: P and Q change sign
            assert _values(seen[k], 1) == pytest.approx(_truth(m2, k + 0.5, 1), rel=1e-9)
            assert seen[k].ct.p_w[0] < 0
        assert seen[3].ct.p_w[0] > 0 and seen[0].ct.p_w[0] > 0
        assert _values(seen[3], 1) == pytest.approx(_truth(m2, 3.5, 1, ()), rel=1e-9)
        client = AsyncModbusTcpClient("127.0.0.1", port=servers[0].port, timeout=2)
        await client.connect()
        try:
            rr = await client.read_input_registers(ct_address(4), count=4, device_id=1)
            m1 = config.members[0]
            want = _truth(m1, 3.5, 4, fleet.faults.books[0].faults)
            assert want[1] == 0 and f32(rr.registers, 2) == 0.0  # open CT: no current
            assert f32(rr.registers, 0) == pytest.approx(want[0], rel=1e-6)
            rr = await client.read_input_registers(ct_address(5), count=4, device_id=1)
            assert f32(rr.registers, 2) == pytest.approx(_truth(m1, 3.5, 5, ())[1], rel=1e-6)
            rr = await client.read_input_registers(0x11D2, count=2, device_id=4)  # solo M1 kWh
            kwh = (rr.registers[0] | rr.registers[1] << 16) / 100
            assert ROLLOVER_KWH - 0.5 <= kwh < ROLLOVER_KWH
        finally:
            client.close()
    lines = [json.loads(x) for x in open(config.fault_log, encoding="utf-8")]
    said = {(x["event"], x["meter"], x["fault"], x["target"]) for x in lines}
    assert ("start", "m2", "reversed_ct", "ct1") in said and ("end", "m2", "reversed_ct", "ct1") \
        in said
    assert ("start", "m1", "open_ct", "ct4") in said and ("end", "m1", "open_ct", "ct4") not in said
    assert ("start", "m3", "wrong_phase", "ct2") in said and ("end", "m3", "wrong_phase", "ct2") \
        in said
    assert ("start", "solo", "energy_rollover", "meter1") in said
    start = next(x for x in lines if x["meter"] == "m2" and x["event"] == "start")
    assert start["start_unix"] == pytest.approx(fleet.start_time + 1, abs=1e-6)
    assert next(x for x in lines if x["id"] == live.id and x["meter"] == "m1")["origin"] == "live"


def test_physics_member_measures_its_fault(tmp_path):
    config = small_fleet(tmp_path, faults=FAULTS[:1], fleet={
        "store": str(tmp_path / "var" / "fleet"), "fidelity": "physics", "workers": 1})
    fleet = PhysicsFleet(config, FleetStore.open(config.store, [m.key for m in config.members]))
    seen: dict[int, object] = {}
    fleet.members[1].add_listener(lambda snap: seen.setdefault(snap.seq, snap))
    fleet.faults.set("m1", "open_ct", "ct4")  # live: from the next second the workers compute
    try:
        run_seconds(fleet, 4)
        assert fleet.members[0].snapshot.ct.i_rms[3] < 0.05  # the ADC noise only
        assert fleet.members[0].snapshot.ct.i_rms[4] > 5
        m2 = config.members[1]
        # second 1 holds the switch on its first sample; second 2 is wholly reversed
        assert _values(seen[2], 1)[2] == pytest.approx(_truth(m2, 2.5, 1)[2], rel=1e-2)
        assert seen[2].ct.p_w[0] < 0 < seen[0].ct.p_w[0]
    finally:
        fleet.close()
