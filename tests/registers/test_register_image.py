"""Register image and reads: values land where the table says, from one snapshot per read."""

from __future__ import annotations

import math
import threading
from dataclasses import replace

import numpy as np
import pytest
from snapshot_factory import FakeMeter, make_snapshot

from pm4324.config.settings import ModbusSettings, Settings
from pm4324.registers.backend import AccessError, ExceptionCode
from pm4324.registers.codecs import decode
from pm4324.registers.image import MapBackend, build_image
from pm4324.registers.table import load_map
from pm4324.snapshot import Energies, Flag


def f32(regs: list[int], order: str = "low-first") -> float:
    return decode("float32", regs, order)


def read_value(backend: MapBackend, name: str, order: str = "low-first"):
    p = backend.register_map.by_name[name]
    if p.type == "bit":
        return backend.read_bits(p.table, p.address, 1)[0]
    return decode(p.type, backend.read_registers(p.table, p.address, p.size), order)


def test_values_land_where_the_table_says(meter, snapshot):
    b = MapBackend(meter)
    s = snapshot
    assert read_value(b, "ct1_v") == pytest.approx(s.ct.v_rms[0], rel=1e-7)
    assert read_value(b, "ct24_kw") == pytest.approx(s.ct.p_w[23] / 1000, rel=1e-7)
    assert read_value(b, "ct24_kvar") == pytest.approx(s.ct.q_var[23] / 1000, rel=1e-7)
    assert read_value(b, "meter8_kva") == pytest.approx(s.meter.s_va[7] / 1000, rel=1e-7)
    assert read_value(b, "meter3_kva_vector") == pytest.approx(s.meter.s_vector_va[2] / 1e3)
    assert read_value(b, "ct7_thd_i") == pytest.approx(s.ct.thd_i_pct[6], rel=1e-7)
    assert read_value(b, "ct23_hz") == pytest.approx(s.ct.frequency_hz[22], rel=1e-7)
    assert read_value(b, "main2_v_ca") == pytest.approx(s.main.v_ll[1, 2], rel=1e-7)
    assert read_value(b, "main1_thd_v_b") == pytest.approx(s.main.thd_v_pct[0, 1], rel=1e-7)
    assert read_value(b, "ct5_flags") == s.ct.flags[4]
    assert read_value(b, "meter2_flags") == s.meter.flags[1]
    assert read_value(b, "main2_flags") == s.main.flags[1]
    assert read_value(b, "meter4_wiring") == 0.0
    assert read_value(b, "model_code") == 43240
    assert read_value(b, "firmware_version") == 100  # BCD 0x0100 = 1.00
    assert read_value(b, "snapshot_seq") == s.seq
    assert read_value(b, "snapshot_time") == round(s.time)
    # energies: float kWh, and uint32 in 0.01 kWh
    assert read_value(b, "ct9_kwh_export_f32") == pytest.approx(s.ct_energy.wh_export[8] / 1e3)
    assert read_value(b, "ct9_kwh_export_u32") == round(s.ct_energy.wh_export[8] / 10)
    assert read_value(b, "meter5_kvarh_q3_u32") == round(s.meter_energy.varh_q3[4] / 10)
    assert read_value(b, "meter6_kvarh") == pytest.approx(s.meter_energy.varh_import[5] / 1e3)


def test_lead_lag_nan_and_holding(meter, snapshot):
    b = MapBackend(meter)
    p, q = snapshot.ct.p_w, snapshot.ct.q_var
    quadrants = {(bool(p[i] >= 0), bool(q[i] > 0)) for i in range(24) if q[i] != 0}
    assert len(quadrants) == 4  # the fixture covers all four quadrants
    for k in range(1, 25):
        i = k - 1
        # lagging (inductive) in quadrants I and III, as Snapshot.to_dict says
        expected = 0.0 if q[i] == 0 else 1.0 if (p[i] >= 0) == (q[i] > 0) else -1.0
        assert read_value(b, f"ct{k}_lead_lag") == expected
    assert q[4] == 0 and read_value(b, "ct5_lead_lag") == 0.0
    assert math.isnan(read_value(b, "ct6_thd_i"))  # NaN in the snapshot stays NaN
    assert b.read_registers("holding", 0x1000, 0x17) == [100] * 8 + [100, 100] + [0] * 8 + [
        0, 0, 1, 192, 0,
    ]
    assert b.read_bits("coil", 0x1000, 2) == [False, True]


def test_before_the_first_snapshot():
    b = MapBackend(FakeMeter())
    assert math.isnan(read_value(b, "ct1_v")) and math.isnan(read_value(b, "meter8_kwh_import_f32"))
    assert read_value(b, "ct1_flags") == Flag.NO_DATA
    assert read_value(b, "snapshot_seq") == 0 and read_value(b, "meter1_kwh_import_u32") == 0
    assert b.read_registers("input", 0x1100, 2) == [0x0000, 0x7FC0]


def test_pm4324_has_no_second_main():
    s = Settings(model="PM-4324", mains=(Settings().mains[0],))
    b = MapBackend(FakeMeter(s, make_snapshot(s)))
    assert read_value(b, "model_code") == 4324
    assert math.isnan(read_value(b, "main2_v_an")) and read_value(b, "main2_flags") == 0
    assert read_value(b, "pt_ratio_main2") == 0
    assert read_value(b, "main1_v_an") == pytest.approx(231.007, rel=1e-6)


def test_high_word_first_setting(snapshot):
    s = replace(snapshot.settings, modbus=ModbusSettings(word_order="high-first"))
    b = MapBackend(FakeMeter(s, replace(snapshot, settings=s)))
    hi, lo = b.read_registers("input", 0x1100, 2)
    assert f32([hi, lo], "high-first") == pytest.approx(snapshot.ct.v_rms[0], rel=1e-7)
    assert read_value(b, "ct1_kwh_import_u32", "high-first") == round(
        snapshot.ct_energy.wh_import[0] / 10
    )


def test_uint32_energy_rolls_over(snapshot):
    wh = 2**32 * 10.0 + 12_340.0  # 42,949,672.96 kWh + 12.34 kWh
    big = Energies(**{k: np.full(8, wh) for k in ("wh_import", "wh_export", "varh_q1",
                      "varh_q2", "varh_q3", "varh_q4", "vah")})  # fmt: skip
    image = build_image(load_map(), replace(snapshot, meter_energy=big), snapshot.settings,
                        (False, False))  # fmt: skip
    p = load_map().by_name["meter1_kwh_import_u32"]
    assert decode("uint32", image.read("input", p.address, 2)) == 1234


@pytest.mark.parametrize(
    ("table", "address", "count"),
    [
        ("input", 0x100C, 1),  # gap after the device block
        ("input", 0x100A, 6),  # partly mapped
        ("input", 0x0000, 1),
        ("input", 0x11E0, 1),  # after Meter 1's block
        ("input", 0x18DF, 2),  # runs past the last register
        ("holding", 0x1017, 1),
        ("holding", 0x0FFF, 2),
    ],
)
def test_unmapped_reads_are_exception_02(meter, table, address, count):
    with pytest.raises(AccessError) as info:
        MapBackend(meter).read_registers(table, address, count)
    assert info.value.code == ExceptionCode.ILLEGAL_DATA_ADDRESS


def test_unmapped_bits_are_exception_02(meter):
    b = MapBackend(meter)
    for table, address, count in [("coil", 0x1012, 1), ("coil", 0x1000, 3), ("discrete", 0, 1)]:
        with pytest.raises(AccessError) as info:
            b.read_bits(table, address, count)
        assert info.value.code == ExceptionCode.ILLEGAL_DATA_ADDRESS


def test_quantity_limits_are_exception_03(meter):
    b = MapBackend(meter)
    for count in (0, 126):
        with pytest.raises(AccessError) as info:
            b.read_registers("input", 0x1100, count)
        assert info.value.code == ExceptionCode.ILLEGAL_DATA_VALUE
    assert len(b.read_registers("input", 0x1100, 125)) == 125


def test_half_of_a_32_bit_value_may_be_read(meter):
    b = MapBackend(meter)
    low, high = b.read_registers("input", 0x1100, 2)
    assert b.read_registers("input", 0x1101, 1) == [high]
    assert b.read_registers("input", 0x1101, 2)[0] == high


def test_new_snapshot_is_served(meter):
    b = MapBackend(meter)
    meter.publish(make_snapshot(seq=8))
    assert read_value(b, "snapshot_seq") == 8


def test_settings_or_relays_changed_elsewhere_are_served(meter):
    b = MapBackend(meter)
    meter.relays = (True, False)
    meter.settings = meter.settings.with_meter(2, ct_ratio=300.0)
    assert b.read_bits("coil", 0x1000, 2) == [True, False]
    assert b.read_registers("holding", 0x1001, 1) == [300]


def test_one_read_is_one_snapshot():
    """A device thread publishes new seconds while reads run: no read mixes two seconds."""
    snaps = [make_snapshot(seq=n) for n in range(40)]
    meter = FakeMeter(snaps[0].settings, snaps[0])
    b = MapBackend(meter)
    done = threading.Event()

    def device_loop() -> None:
        for snap in snaps[1:]:
            meter.publish(snap)
        done.set()

    thread = threading.Thread(target=device_loop)
    thread.start()
    seen = set()
    try:
        while not done.is_set() or not seen:
            regs = b.read_registers("input", 0x1100, 125)  # CT1..CT3, Meter 1, frequencies
            v = [f32(regs[i : i + 2]) for i in range(0, 0x48, 0x12)]  # V of CT1..3, Meter 1
            seq_from = {round((x - base) * 1000) for x, base in zip(v, (201, 202, 203, 301),
                                                                    strict=True)}  # fmt: skip
            assert len(seq_from) == 1, f"one read mixed seconds {seq_from}"
            seen |= seq_from
    finally:
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(seen) >= 1


def test_a_read_uses_the_image_it_started_with(meter):
    """The swap is a reference assignment: an image object never changes once built."""
    b = MapBackend(meter)
    image = b.image
    before = image.read("input", 0x1100, 2)
    meter.publish(make_snapshot(seq=99))
    assert image.read("input", 0x1100, 2) == before
    assert b.image is not image and b.read_registers("input", 0x1100, 2) != before
    with pytest.raises(ValueError):
        image.areas["input"].values[0] = 1


def test_device_identification(meter):
    ident = MapBackend(meter).device_identification()
    assert ident[0] == b"ICP DAS" and ident[1] == b"PM-4324A" and ident[2] == b"1.00"
    assert b"emulation" in ident[4]


@pytest.mark.parametrize("change", ["ct_ratio", "relay", "mode", "word_order", "alarm"])
def test_image_after_a_write_equals_a_full_build(snapshot, change):
    """The incremental rebuild after a write (same snapshot) gives the same words as a full one."""
    from pm4324.snapshot import AlarmStatus

    rm, s = load_map(), snapshot.settings
    before = build_image(rm, snapshot, s, (False, False))
    relays, alarms = (False, False), AlarmStatus()
    if change == "ct_ratio":
        s = s.with_meter(3, ct_ratio=250)
    elif change == "relay":
        relays = (True, False)
    elif change == "mode":
        s = s.with_relay(2, mode="alarm")
    elif change == "word_order":
        s = replace(s, modbus=replace(s.modbus, word_order="high-first"))
    else:
        alarms = AlarmStatus(active=(True,) + (False,) * 15, unacked=(False,) * 16)
    full = build_image(rm, snapshot, s, relays, alarms)
    quick = build_image(rm, snapshot, s, relays, alarms, previous=before)
    for table, area in full.areas.items():
        assert np.array_equal(quick.areas[table].values, area.values), table
        assert np.array_equal(quick.areas[table].mapped, area.mapped), table
    assert not np.array_equal(full.areas["holding"].values, before.areas["holding"].values) \
        or not np.array_equal(full.areas["coil"].values, before.areas["coil"].values) \
        or not np.array_equal(full.areas["input"].values, before.areas["input"].values)
