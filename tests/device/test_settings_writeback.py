"""Settings written over Modbus go back into the operator's file: in place, comments, order,
key style and mode kept, the old file as a backup, and never over an edit made on disk."""

from __future__ import annotations

import difflib
import os
import threading
from pathlib import Path

import pytest

from pm4324.config import settings_writeback
from pm4324.config.settings_parse import load_settings
from pm4324.device.meter import Meter
from pm4324.registers.backend import AccessError, ExceptionCode
from pm4324.registers.image import MapBackend
from pm4324.sources.scenario_parse import load_scenario
from pm4324.sources.simulator import SimulatorSource

EXAMPLE = Path(__file__).resolve().parents[2] / "src/pm4324/data/building-settings.toml"
CT_RATIO_METER = {m: 0x1000 + m - 1 for m in range(1, 9)}  # holding ct_ratio_meterN


@pytest.fixture
def operator_file(tmp_path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8"))
    path.chmod(0o640)
    return path


def start(path: Path) -> tuple[Meter, MapBackend]:
    settings = load_settings(path)
    meter = Meter(settings, SimulatorSource(load_scenario(None), settings),
                  settings_path=str(path), start_time=0.0)
    return meter, MapBackend(meter)


def changed_lines(before: str, after: str) -> list[str]:
    return [d for d in difflib.ndiff(before.splitlines(), after.splitlines())
            if d[:1] in "+-"]


def test_write_edits_one_line_keeps_comments_key_style_mode_and_a_backup(operator_file):
    original = operator_file.read_text()
    meter, b = start(operator_file)
    b.write_registers(CT_RATIO_METER[7], [400])  # [meters.7] ct_type_a = 200: 400 is a CT type
    assert meter.wait_settings_saved()
    after = operator_file.read_text()
    assert changed_lines(original, after) == ["- ct_type_a = 200", "+ ct_type_a = 400"]
    assert os.stat(operator_file).st_mode & 0o777 == 0o640
    backup = operator_file.with_name("site.toml.bak")
    assert backup.read_text() == original
    b.write_registers(CT_RATIO_METER[7], [1234])  # not a CT type: becomes a ratio
    assert meter.wait_settings_saved()
    assert changed_lines(original, operator_file.read_text()) == [
        "- ct_type_a = 200", "+ ct_ratio = 1234"]
    assert load_settings(operator_file).meters[6].ct_ratio == 1234.0
    assert backup.read_text() == after
    events = [e.text for e in meter.events if e.kind == "settings"]
    assert events == ["[meters.7] ct_ratio = 400", "[meters.7] ct_ratio = 1234"]
    meter.close()


def test_an_edit_made_on_disk_since_start_is_merged_not_undone(operator_file):
    meter, b = start(operator_file)
    text = operator_file.read_text()
    edited = text.replace("[meters.2]\nwiring = \"3P4W-3CT\"\nct_type_a = 100",
                          "[meters.2]\nwiring = \"3P4W-3CT\"\nct_type_a = 400")
    assert edited != text
    edited += '\n[store]\npath = "var/site-state.db"  # moved by the operator\n'
    operator_file.write_text(edited)
    b.write_registers(CT_RATIO_METER[8], [300])
    assert meter.wait_settings_saved()
    merged = load_settings(operator_file)
    assert merged.meters[1].ct_ratio == 400.0  # the operator's edit is kept
    assert merged.store.path == "var/site-state.db"
    assert merged.meters[7].ct_ratio == 300.0  # and the write is in
    assert "# moved by the operator" in operator_file.read_text()
    (event,) = [e.text for e in meter.events if e.kind == "settings"]
    assert event == (f"[meters.8] ct_ratio = 300; merged into {operator_file}, edited on disk "
                     "since the meter loaded it (meters.2.ct_ratio, store.path: kept, in effect "
                     "at the next start)")
    meter.close()


def test_a_write_to_a_key_the_operator_changed_is_refused_with_an_event(operator_file):
    meter, b = start(operator_file)
    text = operator_file.read_text()
    operator_file.write_text(text.replace("[meters.7]\nwiring = \"3P3W-3CT\"\nct_type_a = 200",
                                          "[meters.7]\nwiring = \"3P3W-3CT\"\nct_type_a = 300"))
    edited = operator_file.read_text()
    with pytest.raises(AccessError) as info:
        b.write_registers(CT_RATIO_METER[7], [60])
    assert info.value.code == ExceptionCode.ILLEGAL_DATA_VALUE
    assert meter.wait_settings_saved()
    assert operator_file.read_text() == edited
    assert meter.settings.meters[6].ct_ratio == 200.0  # nothing applied
    refused = [e.text for e in meter.events if e.kind == "settings_refused"]
    assert refused == [f"{operator_file}: meters.7.ct_ratio = 60: this key was changed in the "
                       "file since the meter loaded it; the operator's edit is kept and this "
                       "write refused"]
    meter.close()


def test_a_file_broken_on_disk_refuses_the_write(operator_file):
    meter, b = start(operator_file)
    operator_file.write_text(operator_file.read_text() + "\n[meters.9\n")
    with pytest.raises(AccessError) as info:
        b.write_registers(CT_RATIO_METER[8], [300])
    assert info.value.code == ExceptionCode.ILLEGAL_DATA_VALUE
    assert "was edited and cannot be used now" in str(info.value)
    meter.close()


def test_saves_run_off_the_protocol_path_and_writes_share_a_save(operator_file, monkeypatch):
    """While a save is held on the disk, writes are acknowledged and reads answered; the
    writes that arrived meanwhile go to disk together in the next save."""
    on_disk = threading.Event()
    held = threading.Event()
    real_write = settings_writeback.write_atomic

    def slow_disk(path, text):
        held.set()
        assert on_disk.wait(30)
        real_write(path, text)

    monkeypatch.setattr(settings_writeback, "write_atomic", slow_disk)
    meter, b = start(operator_file)
    meter.step()
    b.write_registers(CT_RATIO_METER[2], [300])
    assert held.wait(30)  # the first save is now stuck on the "disk"
    b.write_registers(CT_RATIO_METER[4], [60])  # acknowledged without waiting for it
    b.write_registers(CT_RATIO_METER[5], [400])
    assert b.read_registers("holding", CT_RATIO_METER[4], 2) == [60, 400]  # reads answered
    assert meter._settings_file.saves == 0
    on_disk.set()
    assert meter.wait_settings_saved()
    assert meter._settings_file.saves == 2
    s = load_settings(operator_file)
    assert [s.meters[k].ct_ratio for k in (1, 3, 4)] == [300.0, 60.0, 400.0]
    meter.close()


def test_back_to_back_writes_are_not_taken_for_an_operator_edit(operator_file):
    """A write that lands while our own previous save is being written is ours, not a
    human's: 40 alternating writes, all acknowledged, the last one on disk."""
    meter, b = start(operator_file)
    for k in range(40):
        b.write_registers(CT_RATIO_METER[2], [60 if k % 2 == 0 else 100])
    assert meter.wait_settings_saved()
    assert load_settings(operator_file).meters[1].ct_ratio == 100.0
    assert not [e for e in meter.events if e.kind == "settings_refused"]
    meter.close()


def test_writes_during_a_save_are_not_taken_for_an_operator_edit(operator_file, monkeypatch):
    """The file on disk already shows a save in progress (renamed, not yet recorded) while
    the same key takes two more values: neither is refused as an operator's edit, and no
    write is reported as merged into a file edited on disk."""
    renamed, go_on = threading.Event(), threading.Event()
    real_write = settings_writeback.write_atomic

    def rename_then_hold(path, text):
        real_write(path, text)
        renamed.set()
        assert go_on.wait(30)

    monkeypatch.setattr(settings_writeback, "write_atomic", rename_then_hold)
    meter, b = start(operator_file)
    b.write_registers(CT_RATIO_METER[2], [300])
    assert renamed.wait(30)  # the file says 300; the writer has not recorded it yet
    b.write_registers(CT_RATIO_METER[2], [400])
    b.write_registers(CT_RATIO_METER[2], [60])  # refused before: "the operator's edit"
    go_on.set()
    assert meter.wait_settings_saved()
    assert load_settings(operator_file).meters[1].ct_ratio == 60.0
    assert not [e for e in meter.events if e.kind == "settings_refused"]
    assert not [e for e in meter.events if "edited on disk" in e.text]
    meter.close()


def test_a_deleted_file_is_written_anew_whole(operator_file):
    meter, b = start(operator_file)
    operator_file.unlink()
    b.write_registers(CT_RATIO_METER[8], [300])
    assert meter.wait_settings_saved()
    again = load_settings(operator_file)
    assert again.meters[7].ct_ratio == 300.0 and again.meters[2].wiring.value == "1P2W-1CT"
    meter.close()
