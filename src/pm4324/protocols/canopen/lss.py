"""LSS slave (CiA 305 layer setting services): node-ID and bit rate over the bus, sans I/O.

``LssSlave.handle(request)`` takes the 8 data bytes of one frame to 0x7E5 and returns the
8 bytes to send on 0x7E4 (or None). LSS works in every NMT state, and in the *unconfigured*
state too (node-ID 0xFF), where it is all the node does. The address of the node is its
identity 0x1018 (vendor-ID, product code, revision, serial number).

Services (command specifier: what it does, reply):

* 0x04 switch state global (0 waiting, 1 configuration), no reply. Back in waiting, an
  unconfigured node with a pending node-ID starts (boot-up) with it.
* 0x40..0x43 switch state selective (the four address parts, in order): configuration state
  and reply 0x44 when all four match.
* 0x11 configure node-ID (configuration state): 1..127, or 0xFF to make the node
  unconfigured; reply error 0, or 1 for another value. The new node-ID is *pending*: it
  takes effect at the next NMT reset node / reset communication (or at once, see 0x04).
* 0x13 configure bit timing (table 0 of CiA 305: 0 = 1 Mbit/s, 2 = 500, 3 = 250, 4 = 125
  kbit/s; the others are refused with error 1, as the meter supports only these four);
  0x15 activate bit timing (delay in ms), no reply: the node takes the new rate at once
  (0x2031 reports it; ``CanopenServer.lss_activate_bitrate`` says when the bus is reopened).
* 0x17 store configuration: the pending (else active) node-ID and bit rate go to the
  parameter file; error 0, 1 without a parameter file, 2 when it cannot be written.
* 0x5A..0x5D inquire vendor-ID, product code, revision, serial number; 0x5E inquire the
  active node-ID (configuration state only).
* 0x46..0x4B identify remote slave (address ranges), reply 0x4F when inside them;
  0x4C identify non-configured remote slave, reply 0x50 when unconfigured.
* 0x51 fastscan (only unconfigured nodes in waiting state take part, as CiA 305 intends:
  it finds nodes that have no node-ID yet): reply 0x4F while the bits checked so far match;
  after the fourth part the node is in configuration state.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import IntEnum
from typing import Protocol

UNCONFIGURED = 0xFF
#: CiA 305 bit timing table 0: index -> bit/s (the rates the meter supports)
BIT_TIMINGS = {0: 1_000_000, 2: 500_000, 3: 250_000, 4: 125_000}
_U32 = struct.Struct("<BI")


class Lss(IntEnum):
    SWITCH_GLOBAL = 0x04
    CONFIGURE_NODE_ID = 0x11
    CONFIGURE_BIT_TIMING = 0x13
    ACTIVATE_BIT_TIMING = 0x15
    STORE = 0x17
    SELECTIVE_VENDOR = 0x40
    SELECTIVE_SERIAL = 0x43
    SELECTIVE_RESPONSE = 0x44
    IDENTIFY_VENDOR = 0x46
    IDENTIFY_SERIAL_HIGH = 0x4B
    IDENTIFY_NON_CONFIGURED = 0x4C
    IDENTIFY_SLAVE = 0x4F
    NON_CONFIGURED_SLAVE = 0x50
    FASTSCAN = 0x51
    INQUIRE_VENDOR = 0x5A
    INQUIRE_SERIAL = 0x5D
    INQUIRE_NODE_ID = 0x5E


class LssNode(Protocol):
    """What the slave needs from its node (``CanopenServer`` implements it)."""

    node_id: int  # active; UNCONFIGURED when it has none
    bitrate: int

    def lss_address(self) -> tuple[int, int, int, int]: ...

    def lss_store(self, node_id: int, bitrate: int) -> int: ...  # 0 OK, 1 unsupported, 2 failed

    def lss_start(self) -> None: ...  # an unconfigured node got its node-ID: boot

    def lss_activate_bitrate(self, bitrate: int, delay_ms: int) -> None: ...


def _reply(cs: int, *rest: int) -> bytes:
    return bytes([cs, *rest]).ljust(8, b"\0")


class LssSlave:
    """The LSS state machine of one node."""

    def __init__(self, node: LssNode):
        self.node = node
        self.configuring = False  # LSS configuration state (else waiting)
        self.pending_node_id: int | None = None
        self.pending_bitrate: int | None = None
        self._selective = 0  # address parts matched so far (switch state selective)
        self._ranges: list[int] = []  # identify remote slave: the bounds received so far
        self._fastscan_part: int | None = None  # address part fastscan checks; None = not begun

    def handle(self, data: bytes) -> bytes | None:
        if len(data) != 8:
            return None
        cs, handler = data[0], self._handlers().get(data[0])
        if handler is not None:
            return handler(data)
        if Lss.SELECTIVE_VENDOR <= cs <= Lss.SELECTIVE_SERIAL:
            return self._selective_part(cs - Lss.SELECTIVE_VENDOR, _U32.unpack_from(data)[1])
        if Lss.IDENTIFY_VENDOR <= cs <= Lss.IDENTIFY_SERIAL_HIGH:
            return self._identify_part(cs - Lss.IDENTIFY_VENDOR, _U32.unpack_from(data)[1])
        if Lss.INQUIRE_VENDOR <= cs <= Lss.INQUIRE_SERIAL and self.configuring:
            return _U32.pack(cs, self.node.lss_address()[cs - Lss.INQUIRE_VENDOR]) + bytes(3)
        return None

    def _handlers(self) -> dict[int, Callable[[bytes], bytes | None]]:
        return {Lss.SWITCH_GLOBAL: self._switch_global, Lss.CONFIGURE_NODE_ID: self._node_id,
                Lss.CONFIGURE_BIT_TIMING: self._bit_timing, Lss.ACTIVATE_BIT_TIMING: self._activate,
                Lss.STORE: self._store, Lss.INQUIRE_NODE_ID: self._inquire_node_id,
                Lss.IDENTIFY_NON_CONFIGURED: self._non_configured, Lss.FASTSCAN: self._fastscan}

    # -- state switching ---------------------------------------------------------------------

    def _switch_global(self, data: bytes) -> None:
        if data[1] == 1:
            self.configuring = True
        elif data[1] == 0:
            self.configuring = False
            self._selective = 0
            if self.node.node_id == UNCONFIGURED and self.pending_node_id not in (None, UNCONFIGURED):
                self.node.lss_start()
        return None

    def _selective_part(self, part: int, value: int) -> bytes | None:
        if self.configuring:
            return None
        if part == 0:
            self._selective = 0
        if part != self._selective or value != self.node.lss_address()[part]:
            self._selective = 0
            return None
        self._selective += 1
        if self._selective < 4:
            return None
        self._selective, self.configuring = 0, True
        return _reply(Lss.SELECTIVE_RESPONSE)

    # -- configuration -----------------------------------------------------------------------

    def _node_id(self, data: bytes) -> bytes | None:
        if not self.configuring:
            return None
        nid = data[1]
        if not (1 <= nid <= 127 or nid == UNCONFIGURED):
            return _reply(Lss.CONFIGURE_NODE_ID, 1)
        self.pending_node_id = nid
        return _reply(Lss.CONFIGURE_NODE_ID, 0)

    def _bit_timing(self, data: bytes) -> bytes | None:
        if not self.configuring:
            return None
        if data[1] != 0 or data[2] not in BIT_TIMINGS:
            return _reply(Lss.CONFIGURE_BIT_TIMING, 1)
        self.pending_bitrate = BIT_TIMINGS[data[2]]
        return _reply(Lss.CONFIGURE_BIT_TIMING, 0)

    def _activate(self, data: bytes) -> None:
        if self.configuring and self.pending_bitrate is not None:
            self.node.lss_activate_bitrate(self.pending_bitrate, struct.unpack_from("<H", data, 1)[0])
        return None

    def _store(self, data: bytes) -> bytes | None:
        if not self.configuring:
            return None
        node_id = self.node.node_id if self.pending_node_id is None else self.pending_node_id
        bitrate = self.node.bitrate if self.pending_bitrate is None else self.pending_bitrate
        return _reply(Lss.STORE, self.node.lss_store(node_id, bitrate))

    def _inquire_node_id(self, data: bytes) -> bytes | None:
        return _reply(Lss.INQUIRE_NODE_ID, self.node.node_id) if self.configuring else None

    # -- finding nodes -----------------------------------------------------------------------

    def _identify_part(self, part: int, value: int) -> bytes | None:
        if part == 0:
            self._ranges = []
        if part != len(self._ranges):
            self._ranges = []
            return None
        self._ranges.append(value)
        if len(self._ranges) < 6:
            return None
        vendor, product, rev_low, rev_high, serial_low, serial_high = self._ranges
        self._ranges = []
        v, p, r, s = self.node.lss_address()
        if v == vendor and p == product and rev_low <= r <= rev_high and serial_low <= s <= serial_high:
            return _reply(Lss.IDENTIFY_SLAVE)
        return None

    def _non_configured(self, data: bytes) -> bytes | None:
        unconfigured = self.node.node_id == UNCONFIGURED and self.pending_node_id in (None, UNCONFIGURED)
        return _reply(Lss.NON_CONFIGURED_SLAVE) if unconfigured else None

    def _fastscan(self, data: bytes) -> bytes | None:
        if self.configuring or self.node.node_id != UNCONFIGURED:
            return None
        _, value, bit_checked, part, next_part = struct.unpack_from("<BIBBB", data)
        if bit_checked == 0x80:  # reset: every unconfigured node answers
            self._fastscan_part = 0
            return _reply(Lss.IDENTIFY_SLAVE)
        if self._fastscan_part is None or part != self._fastscan_part or bit_checked > 31 \
                or next_part > 3:
            return None
        mask = (0xFFFF_FFFF << bit_checked) & 0xFFFF_FFFF
        if (self.node.lss_address()[part] ^ value) & mask:
            return None
        if bit_checked == 0 and next_part != part:
            self._fastscan_part = next_part
            if next_part < part:  # all four parts matched: this node is the one
                self._fastscan_part, self.configuring = None, True
        return _reply(Lss.IDENTIFY_SLAVE)
