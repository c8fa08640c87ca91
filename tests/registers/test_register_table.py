"""The register table: valid, complete, and laid out as the evidence says."""

from __future__ import annotations

from dataclasses import fields

import pytest

from pm4324.config.settings import N_CTS, N_METERS
from pm4324.registers import build_map
from pm4324.registers.table import (
    COLUMNS,
    HARMONIC_FIELDS,
    PHASED_MAIN_FIELDS,
    TableError,
    load_map,
    map_text,
    parse_map,
)
from pm4324.snapshot import ENERGY_KINDS, CtValues, MainValues, MeterValues

HEADER = ",".join(COLUMNS)
ROW_OK = "ct1_v,input,0x1100,float32,V,1,,,R,ct.v_rms[1],D,CT1 voltage"


@pytest.fixture(scope="module")
def regmap():
    return load_map()


def sources(regmap, table: str = "input") -> set[str]:
    return {p.source.text for p in regmap.table(table)}


def test_committed_csv_matches_the_generator():
    assert map_text() == build_map.render(), (
        "src/pm4324/registers/map.csv and build_map.py disagree: run "
        "`python -m pm4324.registers.build_map` (or update build_map.py to match the CSV)"
    )


def test_every_snapshot_quantity_is_readable(regmap):
    """Harmonic spectra are the only snapshot values without registers (by design)."""
    served = sources(regmap)
    groups = [(CtValues, "ct", N_CTS), (MeterValues, "meter", N_METERS)]
    for cls, group, count in groups:
        for f in fields(cls):
            if f.name in HARMONIC_FIELDS:
                continue
            for i in range(1, count + 1):
                assert f"{group}.{f.name}[{i}]" in served
    for f in fields(MainValues):
        if f.name in HARMONIC_FIELDS:
            continue
        for i in (1, 2):
            if f.name in PHASED_MAIN_FIELDS:
                assert all(f"main.{f.name}[{i}][{j}]" in served for j in (1, 2, 3))
            else:
                assert f"main.{f.name}[{i}]" in served
    for kind in ENERGY_KINDS:
        assert all(f"ct_energy.{kind}[{k}]" in served for k in range(1, N_CTS + 1))
        assert all(f"meter_energy.{kind}[{m}]" in served for m in range(1, N_METERS + 1))
    assert {"snapshot.seq", "snapshot.time", "snapshot.duration_s"} <= served
    assert {"relay:1", "relay:2"} <= sources(regmap, "coil")


def test_energies_also_as_32_bit_integers(regmap):
    ints = {p.source.text for p in regmap.table("input") if p.type == "uint32"}
    for kind in ENERGY_KINDS:
        assert all(f"ct_energy.{kind}[{k}]" in ints for k in range(1, N_CTS + 1))
        assert all(f"meter_energy.{kind}[{m}]" in ints for m in range(1, N_METERS + 1))


def test_relay_coils_as_the_manual(regmap):
    r1, r2 = regmap.at("coil", 0x1000), regmap.at("coil", 0x1001)
    assert (r1.source.text, r2.source.text) == ("relay:1", "relay:2")
    assert r1.evidence == r2.evidence == "M" and r1.writable
    m1, m2 = regmap.at("coil", 0x1010), regmap.at("coil", 0x1011)  # label lost in the manual
    assert (m1.source.text, m2.source.text) == ("setting:relays.1.mode", "setting:relays.2.mode")
    assert m1.writable and m2.writable and m1.evidence == "ours"


# Rows read for Meter 8 in the v1.00 manual (device reference 4.4.3)
MANUAL_ROWS = {
    0x1824: ("ct.v_rms[24]", "V"), 0x1826: ("ct.i_rms[24]", "A"), 0x1828: ("ct.p_w[24]", "kW"),
    0x182A: ("ct.q_var[24]", "kvar"), 0x182C: ("ct.s_va[24]", "kVA"),
    0x1836: ("meter.v_rms[8]", "V"), 0x1838: ("meter.i_rms[8]", "A"),
    0x183A: ("meter.p_w[8]", "kW"), 0x183C: ("meter.q_var[8]", "kvar"),
    0x183E: ("meter.s_va[8]", "kVA"), 0x1848: ("ct.frequency_hz[22]", "Hz"),
    0x184A: ("ct.frequency_hz[23]", "Hz"), 0x184C: ("ct.frequency_hz[24]", "Hz"),
    0x184E: ("meter.frequency_hz[8]", "Hz"), 0x186A: ("setting:meters.8.wiring", ""),
}


@pytest.mark.parametrize("address", sorted(MANUAL_ROWS))
def test_rows_read_in_the_manual(regmap, address):
    p = regmap.at("input", address)
    assert p.address == address and p.type == "float32" and p.evidence == "D"
    assert (p.source.text, p.unit) == MANUAL_ROWS[address]


@pytest.mark.parametrize("m", range(1, N_METERS + 1))
def test_meter_block_stride(regmap, m):
    base = 0x1000 + 0x100 * m
    elements = [f"ct.{{}}[{3 * (m - 1) + k}]" for k in (1, 2, 3)] + [f"meter.{{}}[{m}]"]
    for n, element in enumerate(elements):
        for i, field in enumerate(("v_rms", "i_rms", "p_w", "q_var", "s_va")):
            p = regmap.at("input", base + 0x12 * n + 2 * i)
            assert p.source.text == element.format(field) and p.evidence == "D"
        assert regmap.at("input", base + 0x48 + 2 * n).source.text == element.format(
            "frequency_hz"
        )
    assert regmap.at("input", base + 0x6A).source.text == f"setting:meters.{m}.wiring"


def test_holding_first_parameter_is_ct_ratio_of_meter_1(regmap):
    p = regmap.at("holding", 0x1000)
    assert p.source.text == "setting:meters.1.ct_ratio" and p.evidence == "D"
    assert (p.minimum, p.maximum) == (1, 65535) and p.writable


def test_identity_values_as_the_concentrator_reads_them(regmap):
    assert regmap.at("input", 0x1000).source.text == "setting:model"
    fw = regmap.at("input", 0x1003)
    assert (fw.type, fw.source.text) == ("bcd", "const:firmware_bcd")


def test_every_writable_register_has_a_range(regmap):
    for p in regmap.table("holding"):
        assert p.writable == (p.minimum is not None)


# -- validation --------------------------------------------------------------------------------


def test_a_valid_row_parses():
    (p,) = parse_map(f"{HEADER}\n{ROW_OK}\n").points
    assert (p.address, p.size, p.factor, p.source.index) == (0x1100, 2, 1.0, 1)


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        (ROW_OK.replace("ct.v_rms[1]", "ct.v_rms[25]"), "numbered 1 to 24"),
        (ROW_OK.replace("ct.v_rms[1]", "ct.volts[1]"), "no field"),
        (ROW_OK.replace("ct.v_rms[1]", "ct.v_harmonics[1]"), "no field"),
        (ROW_OK.replace("ct.v_rms[1]", "setting:meters.1.colour"), "source"),
        (ROW_OK.replace("ct.v_rms[1]", "main.v_ln[1]"), "phase index"),
        (ROW_OK.replace("float32", "float64"), "type"),
        (ROW_OK.replace("input,", "coil,"), "type"),
        (ROW_OK.replace(",V,", ",mV,"), "unit"),
        (ROW_OK.replace("0x1100", "4352"), "address"),
        (ROW_OK.replace(",R,", ",RW,"), "access"),
        (ROW_OK.replace(",D,", ",X,"), "evidence"),
        (ROW_OK.replace(",1,,,", ",2,,,"), "scale"),
        (ROW_OK.replace(",,,R", ",0,9,R"), "range"),
        (ROW_OK + ",extra", "cells"),
        ("x,holding,0x1000,uint16,,1,,,RW,setting:meters.1.ct_ratio,D,d", "min and max"),
        ("x,holding,0x1000,uint16,,1,0,70000,RW,setting:meters.1.ct_ratio,D,d", "max"),
        ("x,holding,0x1000,uint16,,1,,,RW,setting:modbus.address,D,d", "cannot be written"),
    ],
)
def test_bad_rows_fail_loudly(row, fragment):
    with pytest.raises(TableError, match=fragment) as info:
        parse_map(f"{HEADER}\n{row}\n", "test.csv")
    assert str(info.value).startswith("test.csv:2:")


def test_overlap_fails():
    second = "ct1_x,input,0x1101,float32,V,1,,,R,ct.v_rms[2],D,overlaps the first"
    with pytest.raises(TableError, match="overlaps ct1_v at 0x1101"):
        parse_map(f"{HEADER}\n{ROW_OK}\n{second}\n")


def test_duplicate_name_fails():
    second = ROW_OK.replace("0x1100", "0x1200")
    with pytest.raises(TableError, match="used twice"):
        parse_map(f"{HEADER}\n{ROW_OK}\n{second}\n")


def test_bad_header_fails():
    with pytest.raises(TableError, match="header"):
        parse_map("name,address\n")
