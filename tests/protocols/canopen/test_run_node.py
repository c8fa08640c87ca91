"""`pm4324 run` with CANopen on: the node's serial number is the meter's own (its .meter-id),
and a node-ID an LSS master stored takes precedence over the settings file's."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

LIMIT = 60.0
SETTINGS = """model = "PM-4324"
sample_rate_hz = 2000
[canopen]
node_id = 5
interface = "virtual"
channel = "pm4324-run-{tag}"
"""


def run(settings: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pm4324.cli.cli", "run", "--settings",
                           str(settings), "--speed", "50", "--seconds", "1", "--json",
                           "--no-modbus"], capture_output=True, text=True, timeout=LIMIT)


def test_run_takes_the_serial_from_the_meter_identity_and_the_stored_node_id(tmp_path):
    settings = tmp_path / "m.toml"
    settings.write_text(SETTINGS.format(tag=uuid.uuid4().hex[:8]))
    first = run(settings)
    assert first.returncode == 0, first.stderr
    meter_id = (tmp_path / "m.meter-id").read_text().strip()
    serial = f"0x{meter_id.replace('-', '')[:8].upper()}"
    assert "CANopen node 5 on virtual:" in first.stderr and f"serial number {serial}" in first.stderr
    (tmp_path / "m.canopen.json").write_text(json.dumps(
        {"format": 1, "lss": {"node_id": 9, "bitrate": 250000}}))
    again = run(settings)
    assert again.returncode == 0, again.stderr
    assert "CANopen node 9 on virtual:" in again.stderr and "(250000 bit/s" in again.stderr
    assert f"serial number {serial}" in again.stderr
