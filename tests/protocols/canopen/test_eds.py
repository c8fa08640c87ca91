"""The EDS (CiA 306), one per model: generated from the register table, fresh, and accepted
without a warning by lely's dcfchk and dcfgen (dcf-tools), oresat's eds-validate (eds-utils)
and python-canopen."""

from __future__ import annotations

import configparser
import io
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import canopen
import pytest
from canopen.objectdictionary.eds import import_eds

from pm4324.protocols.canopen import eds
from pm4324.protocols.canopen.od import (
    N_TPDO,
    PRODUCT_CODES,
    default_dictionary,
    tpdo_default_can_id,
)

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
MODELS = sorted(eds.EDS_PATHS)


def _path(model: str) -> Path:
    return ROOT / eds.EDS_PATHS[model]


def _tool(name: str, *args: str) -> subprocess.CompletedProcess:
    exe = BIN / name
    assert exe.is_file(), f"{name} is missing: `pip install -e '.[test]'` (dcf-tools, eds-utils)"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("rel", [*eds.EDS_PATHS.values(), eds.DOC_PATH])
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


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("node", [1, 5, 127])
def test_lely_dcfchk_accepts_the_eds_without_a_warning(model, node):
    done = _tool("dcfchk", "-n", str(node), "-p", str(_path(model)))
    assert done.returncode == 0 and done.stderr == "", done.stderr[-2000:]
    from dcf.device import Device
    from dcf.parse import parse_file

    device = Device(parse_file(str(_path(model))), {"NODEID": node})  # what dcfgen builds on
    for n in (1, 5, 32):
        assert device.tpdo[n].cob_id & 0x7FF == tpdo_default_can_id(n, node) or node > 120
    assert [s.index for s in device.tpdo[7].mapping.values()] == [0x3200, 0x3201]


@pytest.mark.parametrize("model", MODELS)
def test_lely_dcfgen_builds_a_master_for_the_meter(model, tmp_path):
    """What ros2_canopen does with a slave's EDS: a master DCF with its PDOs mapped."""
    (tmp_path / "bus.yml").write_text(f'master:\n  node_id: 1\nmeter:\n  dcf: "{_path(model)}"\n'
                                      "  node_id: 5\n")
    done = _tool("dcfgen", "-r", "-d", str(tmp_path), str(tmp_path / "bus.yml"))
    assert done.returncode == 0 and done.stderr == "", done.stderr[-2000:]
    master = configparser.RawConfigParser()
    master.optionxform = str
    master.read(tmp_path / "master.dcf")
    received = {int(master.get(f"{0x1400 + k:04X}sub1", "DefaultValue"), 0) & 0x7FF
                for k in range(N_TPDO)}
    assert received == {tpdo_default_can_id(n, 5) for n in range(1, N_TPDO + 1)}


@pytest.mark.parametrize("model", MODELS)
def test_oresat_eds_validate_accepts_the_eds_without_an_error(model):
    done = _tool("eds-validate", str(_path(model)))
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", done.stderr[-2000:]


@pytest.mark.parametrize("model", MODELS)
def test_python_canopen_imports_the_eds_without_a_warning(model, caplog):
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        od = canopen.import_od(str(_path(model)), 5)
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    for i in range(2, 8):
        assert f"Dummy{i:04d}" in od  # the seven DummyUsage keys are all there
    assert od[0x3200][6].data_type == canopen.objectdictionary.INTEGER32
    assert od[0x1A05][1].default == 0x32000620
    for n in range(1, N_TPDO + 1):
        assert od[0x1800 + n - 1][1].default & 0x7FF == tpdo_default_can_id(n, 5)
    assert od[0x1400][1].default == 0x205 and od[0x1401][1].default == 0x80000305


@pytest.mark.parametrize("model", MODELS)
def test_each_model_has_its_own_identity(model):
    od = canopen.import_od(str(_path(model)), 5)
    assert od[0x1018][2].default == PRODUCT_CODES[model]
    assert od[0x1008].default == f"{model}-CPS"
    parser = configparser.RawConfigParser()
    parser.optionxform = str
    parser.read(_path(model))
    assert parser.get("DeviceInfo", "ProductNumber") == str(PRODUCT_CODES[model])
    assert parser.get("DeviceInfo", "ProductName") == f"{model}-CPS"


@pytest.mark.parametrize("model", MODELS)
def test_no_line_has_a_second_equals_sign_and_no_unknown_key(model):
    for line in _path(model).read_text().splitlines():
        if line.startswith(";"):
            assert "=" not in line, line
        else:
            assert line.count("=") <= 1, line
            assert not line.startswith(("Unit=", "Factor=", "Description=")) or \
                line.startswith("Description=PM-4324"), line  # [FileInfo] Description only


def test_real32_limits_and_defaults_are_left_out_unless_zero():
    text = eds.render_eds(default_dictionary())
    section = text.split("[2058sub1]")[1].split("\n\n")[0]  # alarm 1 threshold, REAL32 rw
    assert "DataType=0x0008" in section
    assert "LowLimit" not in section and "HighLimit" not in section
    assert "Unit: " in text.split("[2058sub1]")[0].rsplit("\n\n", 1)[1] or \
        "threshold" in text.split("[2058sub1]")[0].rsplit("\n\n", 1)[1]  # described in comments


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
    assert eds.render_eds(default_dictionary()) == _path("PM-4324").read_text()
