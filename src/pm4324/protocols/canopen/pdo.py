"""PDO parameters, dynamic mapping (CiA 301 §7.5.2.35-38) and TPDO timing, sans I/O.

Configuration rules (checked on every SDO write, with these abort codes):

* COB-ID (sub 1): bits 11..29 must be 0 (11-bit identifiers only) and a valid PDO may not
  use a restricted CAN-ID (NMT, SYNC, SDO, heartbeat...) nor the CAN-ID of another valid PDO
  of this node: 0x06090030. The CAN-ID of a valid PDO cannot change: invalidate it first
  (bit 31 = 1), else 0x08000022. A PDO with no mapped object cannot be made valid:
  0x06040043. RTR is not supported: bit 30 always reads 1.
* transmission type (sub 2): 0 (synchronous acyclic), 1..240 (every n-th SYNC), 254/255
  (event-driven); 241..253 (RTR types) are refused with 0x06090030.
* inhibit time (sub 3, 100 us) only while the PDO is invalid, else 0x08000022; event timer
  (sub 5, ms) at any time.
* mapping (CiA 301 procedure: invalidate the PDO, write sub 0 = 0, write the entries, write
  sub 0 = count, make the PDO valid). Entries and sub 0 of a valid PDO, or entries while
  sub 0 != 0: 0x08000022. An entry naming a missing object 0x06020000, a missing sub-index
  0x06090011, an object that cannot be mapped this way (or with another length) 0x06040041;
  a count above 8 or more than 64 bits: 0x06040042. Dummy entries 0x0002..0x0007 (INTEGER8
  .. UNSIGNED32) fill a TPDO with zeros and skip bytes of an RPDO.

The parameters are saved (0x1010) as plain numbers and restored through the same checks,
in the same order as a master configures them, so a saved file cannot make a PDO invalid.
A saved CAN-ID that was the default of the saved node-ID follows a new node-ID (LSS).

Event-driven TPDO timing (types 254/255): a new snapshot is the application event; the PDO
is sent once the inhibit time since its last transmission has passed. The event timer (when
non-zero) sends the newest values again when it elapses, and restarts at every transmission.
So that a snapshot period equal to the event timer (the default: 1 s and 1000 ms) does not
give two frames a second, the first repeat after a snapshot-triggered transmission waits a
grace of min(10 %, 100 ms) of the event timer longer for the next snapshot; later repeats
(the meter stalled) keep the event timer exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pm4324.protocols.canopen.codes import (
    COB_EXTENDED,
    COB_INVALID,
    COB_NO_RTR,
    COB_RESERVED_BITS,
    Abort,
    SdoAbort,
    restricted_can_id,
)
from pm4324.protocols.canopen.objects import Dictionary, Entry
from pm4324.protocols.canopen.od import (
    MAX_MAPPED,
    N_RPDO,
    N_TPDO,
    rpdo_default_can_id,
    tpdo_default_can_id,
)

DUMMY_BITS = {0x0002: 8, 0x0003: 16, 0x0004: 32, 0x0005: 8, 0x0006: 16, 0x0007: 32}
EVENT_TYPES = (254, 255)
MAX_GRACE_S = 0.1


def grace_s(event_timer_ms: int) -> float:
    return min(event_timer_ms / 1000.0 * 0.1, MAX_GRACE_S)


@dataclass
class Pdo:
    """One PDO's parameters (as a master reads them) and its run-time state."""

    number: int
    tx: bool
    cob_id: int
    trans_type: int
    inhibit_100us: int = 0
    event_timer_ms: int = 0
    mapping: list[int] = field(default_factory=lambda: [0] * MAX_MAPPED)
    n_mapped: int = 0
    # run time
    last_tx: float | None = None
    pending: bool = False  # an event waits to be sent (inhibit time) or for the SYNC (type 0)
    after_event: bool = False  # the last transmission was a snapshot's (grace applies)
    sync_count: int = 0
    rx_data: bytes | None = None  # a synchronous RPDO waiting for the SYNC

    @property
    def valid(self) -> bool:
        return not self.cob_id & COB_INVALID

    @property
    def can_id(self) -> int:
        return self.cob_id & 0x7FF

    @property
    def event_driven(self) -> bool:
        return self.trans_type in EVENT_TYPES

    def restart(self) -> None:
        """Forget timing state (NMT transitions, reconfiguration)."""
        self.last_tx, self.pending, self.after_event = None, False, False
        self.sync_count, self.rx_data = 0, None

    # -- event-driven timing -----------------------------------------------------------------

    def due(self) -> float | None:
        """When this event-driven TPDO must next be sent (None: nothing scheduled)."""
        if not (self.tx and self.valid and self.event_driven):
            return None
        inhibit = self.last_tx + self.inhibit_100us * 1e-4 if self.last_tx is not None else 0.0
        if self.pending:
            return inhibit
        if self.event_timer_ms and self.last_tx is not None:
            wait = self.event_timer_ms / 1000.0
            if self.after_event:
                wait += grace_s(self.event_timer_ms)
            return max(inhibit, self.last_tx + wait)
        return None

    def sent(self, now: float, event: bool) -> None:
        self.last_tx, self.pending, self.after_event = now, False, event


class PdoTable:
    """All PDOs of the node, their SDO-visible parameters and the mapping rules."""

    def __init__(self, dictionary: Dictionary, node_id: int):
        self.dictionary = dictionary
        self.node_id = node_id
        self.tpdo: list[Pdo] = []
        self.rpdo: list[Pdo] = []
        self.reset()

    def reset(self) -> None:
        """Power-on (and reset communication) values, from the dictionary's defaults."""
        d, node = self.dictionary, self.node_id
        self.tpdo = []
        for n in range(1, N_TPDO + 1):
            com, m = 0x1800 + n - 1, 0x1A00 + n - 1
            cob = d.entry(com, 1).default & ~0x7FF | tpdo_default_can_id(n, node)
            self.tpdo.append(Pdo(n, True, cob, d.entry(com, 2).default, d.entry(com, 3).default,
                                 d.entry(com, 5).default, self._defaults(m), d.entry(m, 0).default))
        self.rpdo = []
        for n in range(1, N_RPDO + 1):
            com, m = 0x1400 + n - 1, 0x1600 + n - 1
            cob = d.entry(com, 1).default + node
            self.rpdo.append(Pdo(n, False, cob, d.entry(com, 2).default,
                                 mapping=self._defaults(m), n_mapped=d.entry(m, 0).default))

    def _defaults(self, index: int) -> list[int]:
        return [self.dictionary.entry(index, s).default for s in range(1, MAX_MAPPED + 1)]

    def find(self, index: int) -> tuple[Pdo, bool] | None:
        """(PDO, is the mapping object) for a 0x1400/0x1600/0x1800/0x1A00 index."""
        for base, pdos, is_map in ((0x1400, self.rpdo, False), (0x1600, self.rpdo, True),
                                   (0x1800, self.tpdo, False), (0x1A00, self.tpdo, True)):
            if base <= index < base + len(pdos):
                return pdos[index - base], is_map
        return None

    def rpdo_for(self, can_id: int) -> Pdo | None:
        for p in self.rpdo:
            if p.valid and p.can_id == can_id:
                return p
        return None

    # -- SDO view ----------------------------------------------------------------------------

    def read(self, pdo: Pdo, is_map: bool, sub: int) -> int:
        if is_map:
            return pdo.n_mapped if sub == 0 else pdo.mapping[sub - 1]
        values = {1: pdo.cob_id, 2: pdo.trans_type, 3: pdo.inhibit_100us, 5: pdo.event_timer_ms}
        return values[sub]

    def write(self, pdo: Pdo, is_map: bool, sub: int, value: int) -> None:
        """Apply one parameter write, or raise the abort that refuses it."""
        if is_map:
            self._write_mapping(pdo, sub, value)
        elif sub == 1:
            self._write_cob_id(pdo, value)
        elif sub == 2:
            if not (value <= 240 or value in EVENT_TYPES):
                raise SdoAbort(Abort.VALUE_RANGE, f"transmission type {value} is not supported")
            pdo.trans_type = value
            pdo.restart()
        elif sub == 3:
            if pdo.valid:
                raise SdoAbort(Abort.DEVICE_STATE, "inhibit time of a valid PDO")
            pdo.inhibit_100us = value
        elif sub == 5:
            pdo.event_timer_ms = value
        else:
            raise SdoAbort(Abort.READ_ONLY, "highest sub-index is read-only")

    def _write_cob_id(self, pdo: Pdo, value: int) -> None:
        if value & (COB_RESERVED_BITS | COB_EXTENDED):
            raise SdoAbort(Abort.VALUE_RANGE, f"COB-ID 0x{value:08X}: 11-bit identifiers only")
        valid, can_id = not value & COB_INVALID, value & 0x7FF
        if valid and pdo.valid and can_id != pdo.can_id:
            raise SdoAbort(Abort.DEVICE_STATE, "the CAN-ID of a valid PDO cannot change")
        if valid and restricted_can_id(can_id):
            raise SdoAbort(Abort.VALUE_RANGE, f"CAN-ID 0x{can_id:03X} is restricted")
        if valid and any(q is not pdo and q.valid and q.can_id == can_id
                         for q in self.tpdo + self.rpdo):
            raise SdoAbort(Abort.VALUE_RANGE, f"CAN-ID 0x{can_id:03X} is used by another PDO")
        if valid and pdo.n_mapped == 0:
            raise SdoAbort(Abort.INCOMPATIBLE, "a PDO without mapped objects cannot be valid")
        was_valid = pdo.valid
        pdo.cob_id = value | COB_NO_RTR if pdo.tx else value
        if valid and not was_valid:
            pdo.restart()

    def _write_mapping(self, pdo: Pdo, sub: int, value: int) -> None:
        if pdo.valid:
            raise SdoAbort(Abort.DEVICE_STATE, "invalidate the PDO before changing its mapping")
        if sub == 0:
            if value > MAX_MAPPED:
                raise SdoAbort(Abort.PDO_LENGTH, f"{value} objects: at most {MAX_MAPPED}")
            bits = 0
            for mapped in pdo.mapping[:value]:
                if mapped == 0:
                    raise SdoAbort(Abort.INCOMPATIBLE, "an entry below the count is empty")
                bits += mapped & 0xFF
            if bits > 64:
                raise SdoAbort(Abort.PDO_LENGTH, f"{bits} bits do not fit one PDO")
            pdo.n_mapped = value
            return
        if pdo.n_mapped != 0:
            raise SdoAbort(Abort.DEVICE_STATE, "write sub-index 0 = 0 before the entries")
        if value:
            self.resolve(value, pdo.tx)
        pdo.mapping[sub - 1] = value

    # -- saving ------------------------------------------------------------------------------

    def saved(self) -> list[dict[str, int | bool | list[int]]]:
        return [{"tx": p.tx, "number": p.number, "cob_id": p.cob_id, "trans_type": p.trans_type,
                 "inhibit_100us": p.inhibit_100us, "event_timer_ms": p.event_timer_ms,
                 "mapping": p.mapping[: p.n_mapped]} for p in self.tpdo + self.rpdo]

    def restore(self, saved: list[dict], saved_node_id: int) -> None:
        """Apply saved parameters with the checks of SDO writes (SdoAbort if one fails)."""
        valid: list[tuple[Pdo, int]] = []
        for item in saved:
            p = (self.tpdo if item["tx"] else self.rpdo)[int(item["number"]) - 1]
            cob = int(item["cob_id"])
            if cob & 0x7FF == self._default_can_id(p, saved_node_id):
                cob = cob & ~0x7FF | self._default_can_id(p, self.node_id)
            self._write_cob_id(p, cob | COB_INVALID)
            self.write(p, False, 2, int(item["trans_type"]))
            if p.tx:
                self.write(p, False, 3, int(item["inhibit_100us"]))
                self.write(p, False, 5, int(item["event_timer_ms"]))
            self._write_mapping(p, 0, 0)
            mapping = [int(m) for m in item["mapping"]]
            for sub, value in enumerate(mapping, start=1):
                self._write_mapping(p, sub, value)
            self._write_mapping(p, 0, len(mapping))
            valid.append((p, cob))
        for p, cob in valid:  # all invalid first, so no CAN-ID meets its old owner
            self._write_cob_id(p, cob)

    @staticmethod
    def _default_can_id(p: Pdo, node_id: int) -> int:
        return tpdo_default_can_id(p.number, node_id) if p.tx else \
            rpdo_default_can_id(p.number, node_id)

    def resolve(self, value: int, tx: bool) -> Entry | int:
        """The entry a mapping value names (or, for a dummy, its length in bytes)."""
        index, sub, bits = value >> 16, value >> 8 & 0xFF, value & 0xFF
        if bits > 64:
            raise SdoAbort(Abort.PDO_LENGTH, f"{bits} bits")
        if index in DUMMY_BITS and sub == 0:
            if bits != DUMMY_BITS[index]:
                raise SdoAbort(Abort.NOT_MAPPABLE, f"dummy 0x{index:04X} has {DUMMY_BITS[index]} bits")
            return bits // 8
        entry = self.dictionary.entry(index, sub)
        usable = entry.readable if tx else entry.writable
        if not (entry.pdo and usable) or bits != entry.bits:
            raise SdoAbort(Abort.NOT_MAPPABLE, f"0x{index:04X}:{sub} ({bits} bits) cannot be mapped")
        return entry

    # -- frames ------------------------------------------------------------------------------

    def compose(self, pdo: Pdo, read: Callable[[Entry], bytes]) -> bytes:
        """A TPDO's data from its mapped entries (``read`` gives an entry's bytes)."""
        data = bytearray()
        for value in pdo.mapping[: pdo.n_mapped]:
            target = self.resolve(value, True)
            data += bytes(target) if isinstance(target, int) else read(target)
        return bytes(data)

    def unpack(self, pdo: Pdo, data: bytes) -> list[tuple[Entry, bytes]] | None:
        """An RPDO's data cut into (entry, bytes); None when it is shorter than the mapping."""
        out, offset = [], 0
        for value in pdo.mapping[: pdo.n_mapped]:
            target = self.resolve(value, False)
            n = target if isinstance(target, int) else target.size or 0
            if offset + n > len(data):
                return None
            if not isinstance(target, int):
                out.append((target, bytes(data[offset : offset + n])))
            offset += n
        return out

    def length(self, pdo: Pdo) -> int:
        return sum((v & 0xFF) // 8 for v in pdo.mapping[: pdo.n_mapped])
