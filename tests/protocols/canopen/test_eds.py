"""The EDS (CiA 306): generated from the register table, fresh, and accepted by python-canopen."""

from __future__ import annotations

import configparser
import io
from pathlib import Path

import canopen
import pytest
from canopen.objectdictionary.eds import import_eds

from pm4324.protocols.canopen import eds
from pm4324.protocols.canopen.od import N_TPDO, default_dictionary, tpdo_default_can_id

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("rel", [eds.EDS_PATH, eds.DOC_PATH])
def test_committed_files_are_fresh(rel):
    path = ROOT / rel
    assert path.is_file(), f"{rel} is missing: run `{eds.COMMAND}`"
    assert path.read_bytes().decode("utf-8") == eds.outputs(ROOT)[rel], (
        f"{rel} is stale: run `{eds.COMMAND}` and commit the result")


def test_check_mode_reports_stale_files(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / eds.DOC_PATH).write_text(f"# x\n{eds.TABLE_START}\n{eds.TABLE_END}\n")
    assert eds.main(["--root", str(tmp_path), "--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert eds.main(["--root", str(tmp_path)]) == 0
    assert eds.main(["--root", str(tmp_path), "--check"]) == 0


def test_python_canopen_imports_the_committed_eds():
    od = canopen.import_od(str(ROOT / eds.EDS_PATH), 5)
    for i in range(2, 8):
        assert f"Dummy{i:04d}" in od  # the seven DummyUsage keys are all there
    assert od[0x3200][6].data_type == canopen.objectdictionary.INTEGER32
    assert od[0x1A05][1].default == 0x32000620
    for n in range(1, N_TPDO + 1):
        assert od[0x1800 + n - 1][1].default & 0x7FF == tpdo_default_can_id(n, 5)
    assert od[0x1400][1].default == 0x205 and od[0x1401][1].default == 0x80000305
    assert od["kW"]["ct1"].factor == 0.001 and od["kWh"]["meter8"].unit == "kWh"


def test_every_object_and_entry_is_described():
    text = eds.render_eds(default_dictionary())
    parser = configparser.RawConfigParser()
    parser.optionxform = str
    parser.read_string(text)
    for section in ("FileInfo", "DeviceInfo", "DummyUsage", "MandatoryObjects",
                    "OptionalObjects", "ManufacturerObjects"):
        assert parser.has_section(section)
    listed = sum(int(parser.get(s, "SupportedObjects")) for s in
                 ("MandatoryObjects", "OptionalObjects", "ManufacturerObjects"))
    assert listed == len(default_dictionary().objects)
    for obj in default_dictionary():
        head = f"{obj.index:04X}"
        assert parser.has_section(head)
        if obj.object_type != 0x7:
            assert int(parser.get(head, "SubNumber")) == len(obj.entries)
            for e in obj.entries:
                section = f"{head}sub{e.sub:X}"
                assert parser.get(section, "AccessType") == e.access
                assert int(parser.get(section, "DataType"), 16) == e.data_type


def test_in_memory_eds_is_the_committed_one():
    od = import_eds(io.StringIO(eds.render_eds(default_dictionary())), 120)
    assert od[0x181F][1].default & 0x7FF == tpdo_default_can_id(32, 120)
    assert eds.render_eds(default_dictionary()) == (ROOT / eds.EDS_PATH).read_text()
