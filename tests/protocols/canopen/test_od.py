"""The object dictionary: the evidenced PM-4324-CPS layout, the register table, the scaling."""

from __future__ import annotations

import math

import pytest

from pm4324.protocols.canopen.codes import TPDO_BASES, restricted_can_id
from pm4324.protocols.canopen.objects import FROM_REGISTER_TYPE, DataType
from pm4324.protocols.canopen.od import (
    KW_INDEX,
    KWH_INDEX,
    N_TPDO,
    build_dictionary,
    default_dictionary,
    tpdo_default_can_id,
)
from pm4324.protocols.canopen.values import NO_DATA, kw_raw, kwh_raw
from pm4324.registers.table import load_map

D = default_dictionary()

# rows printed in the manual (v1.02 p.62): mapping object -> (sub 1, sub 2)
PRINTED = {0x1A05: (0x32000620, 0x32010620), 0x1A06: (0x32000720, 0x32010720),
           0x1A07: (0x32000820, 0x32010820), 0x1A0B: (0x32000C20, 0x32010C20),
           0x1A10: (0x32001120, 0x32011120)}


def test_printed_mapping_rows():
    for index, (sub1, sub2) in PRINTED.items():
        assert D.entry(index, 0).default == 2
        assert (D.entry(index, 1).default, D.entry(index, 2).default) == (sub1, sub2)


def test_every_tpdo_maps_its_own_sub_index_of_kw_and_kwh():
    for n in range(1, N_TPDO + 1):
        assert D.entry(0x1A00 + n - 1, 1).default == KW_INDEX << 16 | n << 8 | 32
        assert D.entry(0x1A00 + n - 1, 2).default == KWH_INDEX << 16 | n << 8 | 32


@pytest.mark.parametrize("index, field", [(KW_INDEX, "p_w"), (KWH_INDEX, "wh_import")])
def test_kw_kwh_objects(index, field):
    obj = D.objects[index]
    assert obj.entries[0].default == 32 and len(obj.entries) == 33
    for n in range(1, 33):
        e = obj.get(n)
        assert e.data_type is DataType.INTEGER32 and e.pdo and e.access == "ro"
        m, k = (n - 1) // 4 + 1, (n - 1) % 4 + 1
        if k == 4:  # the Meter m total
            assert (e.source.group.startswith("meter"), e.source.index) == (True, m)
        else:  # CT 3(m-1)+k, phase k
            assert (e.source.group.startswith("ct"), e.source.index) == (True, 3 * (m - 1) + k)
        assert e.source.field == field


def test_every_table_row_has_an_entry_of_its_type():
    for p in load_map().points:
        if p.source.kind == "const" and p.source.field == "reserved":
            assert p not in D.by_point
            continue
        e = D.by_point[p]
        assert e.point.source.text == p.source.text
        if p.source.kind in ("measured", "snapshot"):
            assert e.data_type is FROM_REGISTER_TYPE[p.type] and e.point.scale == p.scale
        if p.writable:
            assert e.writable, p.name


def test_entries_keep_their_place_and_types():
    assert D.entry(0x2200, 1).point.name == "ct1_v"  # CT voltages, sub = CT number
    assert D.entry(0x2200, 24).point.name == "ct24_v"
    assert D.entry(0x2100, 6).point.name == "main2_v_cn"  # sub = 3 (main - 1) + phase
    assert D.entry(0x2480, 1).data_type is DataType.UNSIGNED32  # 0.01 kWh counters
    assert D.entry(0x2011, 0).access == "wo"  # energy reset: a command
    assert D.entry(0x2010, 2).access == "rw" and D.entry(0x2010, 2).pdo  # relays: RPDO


def test_dictionary_does_not_depend_on_the_model_but_for_names():
    a, b = build_dictionary(model="PM-4324"), build_dictionary(model="PM-4324A")
    assert list(a.objects) == list(b.objects)
    assert a.entry(0x1008, 0).default == "PM-4324-CPS" and b.entry(0x1018, 2).default == 43240


@pytest.mark.parametrize("node", [1, 5, 64, 119, 120, 121, 127])
def test_tpdo_can_ids_are_distinct_tpdo_identifiers(node):
    ids = [tpdo_default_can_id(n, node) for n in range(1, N_TPDO + 1)]
    assert ids[:4] == [base + node for base in TPDO_BASES]  # predefined connection set
    assert len(set(ids)) == N_TPDO
    for can_id in ids:
        assert (can_id & 0x780) in TPDO_BASES and not restricted_can_id(can_id)
        assert 1 <= (can_id & 0x7F) <= 127


def test_tpdo_can_ids_wrap_from_127_to_1():
    assert tpdo_default_can_id(5, 127) == 0x181
    assert tpdo_default_can_id(32, 127) == 0x487


def test_kw_scaling():
    assert kw_raw(12345.4) == 12345 and kw_raw(-0.6) == -1
    assert kw_raw(1e12) == 2**31 - 1 and kw_raw(-1e12) == -(2**31 - 1)  # clamped
    assert kw_raw(math.nan) == NO_DATA and kw_raw(math.inf) == 2**31 - 1


def test_kwh_scaling_and_rollover():
    assert kwh_raw(0.0) == 0 and kwh_raw(12_346.0) == 1235  # Wh -> 0.01 kWh, rounded
    top = (2**31) * 10.0  # Wh at which the counter rolls over
    assert kwh_raw(top - 10.0) == 2**31 - 1
    assert kwh_raw(top) == 0 and kwh_raw(top + 30.0) == 3  # like an odometer, never negative
    assert kwh_raw(math.nan) == NO_DATA
