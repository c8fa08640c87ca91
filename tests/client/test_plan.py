"""The read plan decodes a register image into exactly the dict the point-by-point decoder
(``client.modbus``) gives: on random register contents (any float32, NaN, BCD that is not
BCD), on a real meter's image, in both word orders, and when a device refuses our rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from snapshot_factory import FakeMeter, backend_reader, make_snapshot

from pm4324.client.modbus import read_points, snapshot_dict, wanted_points
from pm4324.client.plan import ReadPlan, shortest_float32
from pm4324.config.settings import WORD_ORDERS
from pm4324.registers.image import MapBackend
from pm4324.registers.table import MAX_REGISTERS, load_map


def reference(read, meters, order) -> dict:
    return snapshot_dict(read_points(read, wanted_points(load_map(), meters), order), meters)


def planned(read, meters, order) -> dict | None:
    plan = ReadPlan(meters)
    answers = {}
    for r in plan.requests:
        answers[r.key] = read(*r.key)
        if answers[r.key] is None:
            for sub in r.parts:
                answers[sub.key] = read(*sub.key)
    return plan.decode_answers(answers, order)


def random_reader(seed: int, refuse_ours: bool = False):
    """Every mapped address holds a random word; special values sprinkled in."""
    rng = np.random.default_rng(seed)
    table = load_map()
    words = {a: int(x) for a, x in zip(sorted(table.addresses("input")),
                                        rng.integers(0, 65536, len(table.addresses("input"))))}
    specials = [0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x3F80, 0x4000, 0x0100, 0x0999, 0x9999]
    for a in rng.choice(sorted(words), 300):
        words[int(a)] = specials[int(rng.integers(len(specials)))]
    bits = {a: bool(rng.integers(2)) for a in table.addresses("coil")}

    def read(kind, address, count):
        cells = range(address, address + count)
        store = bits if kind == "coil" else words
        if any(a not in store for a in cells):
            return None
        if refuse_ours and any(not table.at(kind, a).evidenced for a in cells) and any(
                table.at(kind, a).evidenced for a in cells):
            return None
        return [store[a] for a in cells]

    return read


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("order", WORD_ORDERS)
def test_random_images_decode_as_the_point_decoder_does(seed, order):
    read = random_reader(seed, refuse_ours=seed % 2 == 1)
    meters = [1, 2, 3, 4, 5, 6, 7, 8] if seed < 3 else [2, 7]
    assert planned(read, meters, order) == reference(read, meters, order)


@pytest.mark.parametrize("order", WORD_ORDERS)
def test_a_meters_image_decodes_as_the_point_decoder_does(order):
    snap = make_snapshot()
    backend = MapBackend(FakeMeter(snap.settings, snap))
    read = backend_reader(backend)
    got = planned(read, list(range(1, 9)), order)
    assert got == reference(read, list(range(1, 9)), order)
    if order == WORD_ORDERS[0]:  # the order the meter serves
        assert got["meters"][0]["p_w"] is not None and got["seq"] == snap.seq


def test_the_plan_is_the_fewest_requests_over_mapped_points():
    plan = ReadPlan()
    table = load_map()
    # each Meter's block (224 registers) takes two requests; plus relays, device, two mains
    assert len(plan.requests) == 2 * 8 + 4
    for r in plan.requests:
        assert r.count <= MAX_REGISTERS
        assert all(table.at(r.table, a) is not None for a in range(r.address, r.address + r.count))
        assert table.at(r.table, r.address).address == r.address  # no point split
        last = table.at(r.table, r.address + r.count - 1)
        assert last.end == r.address + r.count
    assert len(ReadPlan([3]).requests) == 2 + 4


def test_shortest_float32_is_pythons_str():
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    edge = np.array([1.0, 0.1, 0.3, 2.0**-10, 2.0**24 + 2, 1e-12, 3e38, 1e21, 9.9999999,
                     16777217.0, 0.5, 100.0, 1e7, 123456.78, -0.0, 5e-45], np.float32)
    values = np.concatenate([bits.view(np.float32), edge,
                             rng.uniform(-1e4, 1e4, 100_000).astype(np.float32),
                             np.round(rng.uniform(0, 500, 100_000), 2).astype(np.float32)])
    values = values[np.isfinite(values)]
    got = shortest_float32(values)
    want = np.array([float(str(v)) for v in values])
    assert np.array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("order", WORD_ORDERS)
def test_energies_above_ten_million_kwh_keep_their_hundredths(order):
    """The integer registers' 0.01 kWh up to the rollover is 10 significant digits (9 gave
    42,949,672.5 for 42,949,672.47: found by tests/hub/test_hub_energy_events.py)."""
    snap = make_snapshot()
    meter_wh, ct_wh = snap.meter_energy.wh_import.copy(), snap.ct_energy.wh_import.copy()
    meter_wh[0], ct_wh[0] = 42_949_672_470.0, 12_345_678_910.0  # 0.5 kWh short of the rollover
    snap = dataclasses.replace(
        snap, meter_energy=dataclasses.replace(snap.meter_energy, wh_import=meter_wh),
        ct_energy=dataclasses.replace(snap.ct_energy, wh_import=ct_wh))
    read = backend_reader(MapBackend(FakeMeter(snap.settings, snap)))
    for got in (planned(read, [1], order), reference(read, [1], order)):
        if order == WORD_ORDERS[0]:
            assert got["meters"][0]["kwh_import"] == 42_949_672.47
            assert got["cts"][0]["kwh_import"] == 12_345_678.91
    assert planned(read, [1], order) == reference(read, [1], order)
