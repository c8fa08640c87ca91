"""What the node keeps over a restart: its saved parameters and its identity.

**Saved parameters** (0x1010 "save", LSS *store configuration*) go to one small JSON file of
their own beside the meter identity (``<settings stem>.canopen.json``), never into the
settings file: the settings file is the user's, written by the meter's settings code. The
file is replaced atomically (temporary file, fsync, rename, fsync of the directory), so a
crash leaves the old or the new parameters, whole. It has two sections:

* ``communication``: what 0x1010 saved (PDO parameters and mappings, 0x1005, 0x100C,
  0x100D, 0x1015, 0x1017), loaded at every power-on, NMT reset node and reset communication
  until 0x1011 "load" removes it;
* ``lss``: the node-ID and bit rate an LSS master stored; they take precedence over
  ``[canopen] node_id`` / ``bitrate`` of the settings file.

A file that cannot be read or parsed is reported (a warning) and ignored: the node starts
with its defaults rather than not at all.

**Identity** (0x1018, LSS address): the serial number is the first 32 bits of the meter's
own identity (the UUID in its ``.meter-id`` file, see ``device.store``), so two meters on
one bus differ even with equal settings, and a meter keeps its serial over a node-ID change.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

from pm4324.config.settings import CAN_BITRATES, CanopenSettings, Settings
from pm4324.config.settings_file import write_atomic
from pm4324.device.store import store_location
from pm4324.protocols.canopen.lss import UNCONFIGURED

log = logging.getLogger(__name__)

FORMAT = 1
SECTIONS = ("communication", "lss")


class ParameterFile:
    """The node's saved parameters (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, Any]:
        """The saved sections ({} when nothing was saved, or the file is unusable)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("CANopen: ignoring the saved parameters %s: %s", self.path, exc)
            return {}
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            log.warning("CANopen: ignoring the saved parameters %s: not format %d", self.path, FORMAT)
            return {}
        return {k: v for k, v in data.items() if k in SECTIONS and isinstance(v, dict)}

    def section(self, name: str) -> dict[str, Any] | None:
        return self.load().get(name)

    def put(self, name: str, value: dict[str, Any] | None) -> None:
        """Replace (or with None remove) one section, atomically; OSError if it cannot."""
        data = self.load()
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
        write_atomic(self.path, json.dumps({"format": FORMAT, **data}, indent=1, sort_keys=True)
                     + "\n")


def serial_number(meter_id: str) -> int:
    """0x1018:4 of a meter: the first 32 bits of its identity UUID (1 for the one UUID in
    2^32 where they are 0, a value CiA 301 reserves)."""
    return uuid.UUID(meter_id).int >> 96 or 1


def node_files(settings: Settings, settings_path: str | None) -> tuple[ParameterFile, int]:
    """(saved parameters, serial number) of the meter run with these settings.

    The meter identity file exists once the state store was opened (``device.store``).
    """
    _, id_path = store_location(settings, settings_path)
    name = id_path.name.removesuffix("meter-id") + "canopen.json"
    serial = serial_number(id_path.read_text(encoding="utf-8").strip())
    return ParameterFile(id_path.with_name(name)), serial


def start_values(co: CanopenSettings, parameters: ParameterFile | None) -> tuple[int, int]:
    """(node-ID, bit rate) to start with: what an LSS master stored, else the settings'."""
    stored = parameters.section("lss") if parameters else None
    if not stored:
        return co.node_id, co.bitrate
    node_id, bitrate = stored.get("node_id"), stored.get("bitrate")
    if not (isinstance(node_id, int) and (1 <= node_id <= 127 or node_id == UNCONFIGURED)):
        log.warning("CANopen: stored LSS node-ID %r ignored", node_id)
        node_id = co.node_id
    if bitrate not in CAN_BITRATES:
        log.warning("CANopen: stored LSS bit rate %r ignored", bitrate)
        bitrate = co.bitrate
    return node_id, bitrate
