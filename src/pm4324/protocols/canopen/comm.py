"""The communication objects (0x1000..0x1FFF) as the node keeps them: values, checks, saving.

The PDO parameters live in ``pdo.PdoTable``, the EMCY state in ``emcy.EmcyProducer``; this
class holds the rest and answers SDO reads and writes of all of them, sans I/O:

* 0x1003 error history: sub 0 is the number of entries; writing 0 clears the history, any
  other value is refused (0x06090030); an entry beyond the number reads 0 (so a master
  that uploads every object is not stopped by an empty history).
* 0x1005 SYNC COB-ID (consumer only), 0x100C guard time (ms), 0x100D life time factor,
  0x1015 EMCY inhibit time (100 us), 0x1017 heartbeat producer time (ms): any value of the
  type, at any time.
* 0x1010 store / 0x1011 restore (CiA 301 §7.5.2.13-14): the write must be the 4 bytes "save"
  (0x65766173) or "load" (0x64616F6C), else 0x08000020. Sub 1 (all) and 2 (communication)
  save or forget the communication objects (``storage``); the saved ones are loaded at
  power-on, reset node and reset communication. Sub 3 (application: the 0x2000.. settings)
  is saved by the settings file on every change already: "save" is accepted and does
  nothing, "load" is refused (0x08000020): the settings file is the user's to reset.
  Without a parameter file (tests, scripts) every save or load is refused with 0x08000020.
* 0x1018 identity: vendor-ID, product code, revision, and the serial number of this meter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pm4324.protocols.canopen.codes import (
    COB_EXTENDED,
    COB_RESERVED_BITS,
    Abort,
    SdoAbort,
    restricted_can_id,
)
from pm4324.protocols.canopen.emcy import EmcyProducer
from pm4324.protocols.canopen.objects import Dictionary, Entry
from pm4324.protocols.canopen.od import STORE_SUBS
from pm4324.protocols.canopen.pdo import PdoTable
from pm4324.protocols.canopen.storage import ParameterFile

SAVE, LOAD = 0x6576_6173, 0x6461_6F6C  # "save" and "load", little-endian ASCII
SECTION = "communication"
#: the plain communication parameters: index -> attribute of CommObjects
PARAMETERS = {0x1005: "sync_cob_id", 0x100C: "guard_time_ms", 0x100D: "life_time_factor",
              0x1015: "emcy_inhibit_100us", 0x1017: "heartbeat_ms"}


@dataclass(frozen=True)
class Identity:
    """0x1018, and the LSS address of the node."""

    vendor_id: int
    product_code: int
    revision: int
    serial: int

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.vendor_id, self.product_code, self.revision, self.serial


class CommObjects:
    """Values of the communication objects of one node, and their SDO access."""

    def __init__(self, dictionary: Dictionary, pdos: PdoTable, emcy: EmcyProducer,
                 identity: Identity, name: str, storage: ParameterFile | None = None):
        self.dictionary = dictionary
        self.pdos = pdos
        self.emcy = emcy
        self.identity = identity
        self.name = name  # 0x1008
        self.storage = storage
        self.sync_cob_id = self.guard_time_ms = self.life_time_factor = 0
        self.emcy_inhibit_100us = self.heartbeat_ms = 0
        self.saved_invalid = ""  # why the saved parameters were not loaded ("" = fine)

    # -- power-on values ---------------------------------------------------------------------

    def reset(self) -> None:
        """Defaults, then what 0x1010 saved (NMT reset, power-on)."""
        self.reset_to_defaults()
        saved = self.storage.section(SECTION) if self.storage else None
        self.saved_invalid = ""
        if saved:
            try:
                self._restore(saved)
            except (SdoAbort, KeyError, TypeError, ValueError) as exc:
                self.saved_invalid = f"{exc}"
                self.reset_to_defaults()
        self.emcy.inhibit_100us = self.emcy_inhibit_100us

    def reset_to_defaults(self) -> None:
        for index, attr in PARAMETERS.items():
            setattr(self, attr, self.dictionary.entry(index, 0).default)
        self.pdos.reset()

    def saved(self) -> dict[str, Any]:
        """What 0x1010 writes to the parameter file."""
        return {"node_id": self.pdos.node_id, "pdos": self.pdos.saved(),
                **{attr: getattr(self, attr) for attr in PARAMETERS.values()}}

    def _restore(self, saved: dict[str, Any]) -> None:
        for index, attr in PARAMETERS.items():
            value = int(saved[attr])
            self._check(self.dictionary.entry(index, 0), value)
            setattr(self, attr, value)
        self.pdos.restore(saved["pdos"], int(saved["node_id"]))

    # -- SDO access --------------------------------------------------------------------------

    def read(self, e: Entry) -> int | str:
        index, sub = e.index, e.sub
        found = self.pdos.find(index)
        if found is not None and (found[1] or sub > 0):
            return self.pdos.read(found[0], found[1], sub)
        if index in PARAMETERS:
            return getattr(self, PARAMETERS[index])
        if index == 0x1001:
            return self.emcy.register
        if index == 0x1003:
            if sub == 0:
                return len(self.emcy.history)
            return self.emcy.history[sub - 1] if sub <= len(self.emcy.history) else 0
        if index == 0x1008:
            return self.name
        if index in (0x1010, 0x1011) and sub:  # what the node can save / restore
            if self.storage is None:
                return 0
            return next(c for s, _, c in STORE_SUBS if s == sub) if index == 0x1010 else int(sub != 3)
        if index == 0x1018 and sub:
            return self.identity.as_tuple()[sub - 1]
        return e.default + self.pdos.node_id if e.node_relative else e.default

    def write(self, e: Entry, value: int) -> None:
        """Apply one write, or raise the abort that refuses it."""
        found = self.pdos.find(e.index)
        if found is not None:
            self.pdos.write(found[0], found[1], e.sub, value)
        elif e.index in PARAMETERS:
            self._check(e, value)
            setattr(self, PARAMETERS[e.index], value)
            self.emcy.inhibit_100us = self.emcy_inhibit_100us
        elif e.index == 0x1003 and e.sub == 0:
            if value != 0:
                raise SdoAbort(Abort.VALUE_RANGE, "0x1003:0 takes only 0 (clear the history)")
            self.emcy.history.clear()
        elif e.index in (0x1010, 0x1011):
            self._store(e.index == 0x1010, e.sub, value)
        else:
            raise SdoAbort(Abort.READ_ONLY, f"{e.name} is read-only")

    def _check(self, e: Entry, value: int) -> None:
        if e.index == 0x1005 and (value & (0x4000_0000 | COB_EXTENDED | COB_RESERVED_BITS)
                                  or restricted_can_id(value & 0x7FF)):
            raise SdoAbort(Abort.VALUE_RANGE, f"SYNC COB-ID 0x{value:08X} (consumer only)")
        e.check_range(value)

    def _store(self, save: bool, sub: int, value: int) -> None:
        if value != (SAVE if save else LOAD):
            raise SdoAbort(Abort.CANNOT_STORE, f"0x{value:08X} is not the signature "
                           f"{'save' if save else 'load'}")
        if self.storage is None:
            raise SdoAbort(Abort.CANNOT_STORE, "this node has no parameter file")
        if sub == 3:
            if save:
                return  # the settings file saves the application objects on every change
            raise SdoAbort(Abort.CANNOT_STORE, "the settings file is not reset over CANopen")
        try:
            self.storage.put(SECTION, self.saved() if save else None)
        except OSError as exc:
            raise SdoAbort(Abort.CANNOT_STORE, f"{self.storage.path}: {exc}") from None


class NodeGuard:
    """Node guarding (CiA 301 §7.2.8.3.2.1), sans I/O: the reply to a master's request, and
    life guarding with 0x100C x 0x100D (only while the heartbeat 0x1017 is off)."""

    def __init__(self, comm: CommObjects):
        self.comm = comm
        self.toggle = 0  # bit 7 of the next reply
        self.guarded_at: float | None = None  # the master's last request

    def reset(self) -> None:
        self.toggle, self.guarded_at = 0, None

    def reply(self, state: int, now: float) -> bytes:
        data = bytes([self.toggle | state])
        self.toggle ^= 0x80
        self.guarded_at = now
        return data

    def life_time_s(self) -> float:
        if self.comm.heartbeat_ms:
            return 0.0
        return self.comm.guard_time_ms * self.comm.life_time_factor / 1000

    def deadline(self) -> float | None:
        life = self.life_time_s()
        return self.guarded_at + life if life and self.guarded_at is not None else None

    def lost(self, now: float) -> bool:
        """True once when the life time passed without a request (then until the next one)."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return False
        self.guarded_at = None
        return True
