"""The CANopen slave (PM-4324-CPS): our own CiA 301 services on a python-can bus.

Why not python-canopen's ``LocalNode``: in canopen 2.4.1 its SDO server checks access only
after a segmented download has received all its data, never checks the length against the
data type, does not tie PDOs to the NMT state (``tpdo.start`` transmits in any state), keeps
no PDO communication or mapping parameters behind SDO (no dynamic mapping with the CiA 301
rules) and has no EMCY from the application. Those are what a real master relies on, so the
node implements the services itself (sdo.py, pdo.py, emcy.py), and python-canopen's
``RemoteNode`` serves as the independent master in the tests.

The bus, the threads and the hand-over to the device loop are in bus.py.

NMT: boot-up message, then pre-operational. SDO works in pre-operational and operational;
PDOs (TPDO and RPDO) only in operational; in stopped only NMT, the heartbeat and node
guarding. EMCY is sent in pre-operational and operational. Reset communication restores
0x1000..0x1FFF to their power-on values (the defaults, or what 0x1010 saved: comm.py); reset
node does the same (the manufacturer objects are the meter's live values and persisted
settings, which a reset does not change); both send a boot-up, with the node-ID an LSS
master configured, if it did. LSS (lss.py) works in every state; a node without a node-ID
(LSS node-ID 0xFF) does nothing else.

Every write into the dictionary, by SDO download or RPDO, goes through ``write``: one place
for the checks a write must pass.
"""

from __future__ import annotations

import logging
import time

import can

from pm4324.config.settings import Settings
from pm4324.protocols.canopen.bus import BusNode, CanopenBusError
from pm4324.protocols.canopen.codes import (
    EMCY_BASE,
    HEARTBEAT_BASE,
    LSS_MASTER_ID,
    LSS_SLAVE_ID,
    NMT_ID,
    SDO_RX_BASE,
    SDO_TX_BASE,
    Abort,
    Emcy,
    ErrorBit,
    NmtCommand,
    NmtState,
    SdoAbort,
)
from pm4324.protocols.canopen.comm import CommObjects, Identity, NodeGuard
from pm4324.protocols.canopen.emcy import DEVICE, NODE, RPDO, Condition, EmcyProducer, conditions
from pm4324.protocols.canopen.lss import UNCONFIGURED, LssSlave
from pm4324.protocols.canopen.objects import Entry, decode, encode
from pm4324.protocols.canopen.od import (
    ERROR_HISTORY,
    NODE_ID_INDEX,
    PRODUCT_CODES,
    REVISION,
    VENDOR_ID,
    build_dictionary,
    default_dictionary,
)
from pm4324.protocols.canopen.pdo import Pdo, PdoTable
from pm4324.protocols.canopen.sdo import SdoServer
from pm4324.protocols.canopen.storage import ParameterFile, start_values
from pm4324.protocols.canopen.values import Sample, Values
from pm4324.protocols.faults import ProtocolFaults
from pm4324.registers.backend import MeterControl
from pm4324.registers.image import MapBackend
from pm4324.registers.table import load_map
from pm4324.snapshot import Snapshot

log = logging.getLogger(__name__)

#: python-can interfaces whose bit rate is not set when python-can opens them
RATE_SET_ELSEWHERE = frozenset({"socketcan", "virtual", "udp_multicast"})


class CanopenServer(BusNode):
    """A CANopen slave for one meter on one python-can bus."""

    def __init__(self, control: MeterControl, settings: Settings, *, bus: can.BusABC | None = None,
                 backend: MapBackend | None = None, sdo_timeout_s: float = 1.0,
                 serial_number: int = 0, parameters: ParameterFile | None = None,
                 faults: ProtocolFaults | None = None):
        """``serial_number``: 0x1018:4 (``storage.node_files``); ``parameters``: where 0x1010
        and LSS store (None: nothing is stored); ``faults``: protocol faults (bus.py)."""
        co = settings.canopen
        if not 1 <= co.node_id <= 127:
            raise ValueError(f"CANopen node-ID {co.node_id}: must be 1..127")
        super().__init__(settings, bus, faults)
        self.control = control
        self.parameters = parameters
        self.node_id, self.bitrate = start_values(co, parameters)
        self._latest: Snapshot | None = control.snapshot
        self._handled: Snapshot | None = None
        if backend is None:  # our listener first: TPDOs of 0x3200/0x3201 need no image
            control.add_listener(self._on_snapshot)
        self.backend = backend or MapBackend(control)
        rm = self.backend.register_map
        self.dictionary = default_dictionary(settings.model) if rm is load_map() \
            else build_dictionary(rm, settings.model)
        self.values = Values(control, self.backend, self._call_in_loop)
        self.sdo = SdoServer(self, sdo_timeout_s)
        self.sdo.on_error = self._internal_error
        self.pdos = PdoTable(self.dictionary, self.node_id)
        self.emcy = EmcyProducer(ERROR_HISTORY)
        identity = Identity(VENDOR_ID, PRODUCT_CODES[settings.model], REVISION, serial_number)
        self.comm = CommObjects(self.dictionary, self.pdos, self.emcy, identity,
                                f"{settings.model}-CPS", parameters)
        self.lss = LssSlave(self)
        self.state = NmtState.INITIALISING
        self._next_heartbeat: float | None = None
        self.guard = NodeGuard(self.comm)
        self._reset_communication()
        if backend is not None:
            control.add_listener(self._on_snapshot)

    @property
    def heartbeat_ms(self) -> int:
        return self.comm.heartbeat_ms

    # -- EMCY ------------------------------------------------------------------------------

    def _send_emcy(self, frame: bytes | None) -> None:
        if frame is not None and self.state in (NmtState.PRE_OPERATIONAL, NmtState.OPERATIONAL):
            self.emcy.queue(frame)
            self._flush_emcy(time.monotonic())
            self._wake.set()  # the timer thread sends what the inhibit time holds back

    def _flush_emcy(self, now: float) -> None:
        for frame in self.emcy.take(now):
            self._send(EMCY_BASE + self.node_id, frame)

    # -- NMT -------------------------------------------------------------------------------

    def _reset_communication(self) -> None:
        pending = self.lss.pending_node_id
        if pending is not None and pending != self.node_id:  # LSS: the new node-ID from now on
            log.info("CANopen: node-ID %d -> %d (LSS)", self.node_id, pending)
            self.node_id = self.pdos.node_id = pending
        self.lss.pending_node_id = None
        self.sdo.reset()
        self.emcy.reset()
        self.guard.reset()
        self._handled = None  # re-evaluate EMCY conditions on the newest snapshot
        if self.node_id == UNCONFIGURED:
            return
        self.comm.reset()
        if self.comm.saved_invalid:
            log.warning("CANopen node %d: saved parameters %s not loaded (%s): defaults used",
                        self.node_id, self.comm.storage.path if self.comm.storage else "",
                        self.comm.saved_invalid)

    def _boot(self) -> None:
        """Initialisation done: boot-up message, then pre-operational (without a node-ID:
        nothing but LSS)."""
        self.state = NmtState.INITIALISING
        self._next_heartbeat = None
        if self.node_id == UNCONFIGURED:
            log.info("CANopen: no node-ID, waiting for an LSS master")
            return
        self._send(HEARTBEAT_BASE + self.node_id, b"\x00")
        self._set_state(NmtState.PRE_OPERATIONAL, announce=False)

    def _set_state(self, state: NmtState, announce: bool = True) -> None:
        old, self.state = self.state, state
        if state == old:
            return
        for p in self.pdos.tpdo + self.pdos.rpdo:
            p.restart()
            if state == NmtState.OPERATIONAL and p.tx and (p.event_driven or p.trans_type == 0):
                p.pending = True  # entering operational is an event: the values go out
        if state == NmtState.STOPPED:
            self.sdo.reset()
        now = time.monotonic()
        if announce and self.heartbeat_ms:
            self._send(HEARTBEAT_BASE + self.node_id, bytes([state]))
        self._next_heartbeat = now + self.heartbeat_ms / 1000 if self.heartbeat_ms else None
        self._wake.set()
        log.info("CANopen node %d: %s", self.node_id, state.name)

    def _on_nmt(self, data: bytes) -> None:
        if len(data) != 2 or data[1] not in (0, self.node_id):
            return
        cs = data[0]
        if cs == NmtCommand.START:
            self._set_state(NmtState.OPERATIONAL)
        elif cs == NmtCommand.STOP:
            self._set_state(NmtState.STOPPED)
        elif cs == NmtCommand.ENTER_PRE_OPERATIONAL:
            self._set_state(NmtState.PRE_OPERATIONAL)
        elif cs in (NmtCommand.RESET_NODE, NmtCommand.RESET_COMMUNICATION):
            self._reset_communication()
            self._boot()

    # -- receiving -------------------------------------------------------------------------

    def handle(self, msg: can.Message) -> None:
        """Process one received frame (never raises)."""
        if msg.is_error_frame or msg.is_extended_id or msg.is_fd:
            return
        cob, data = msg.arbitration_id, bytes(msg.data)
        with self._lock:
            try:
                if not msg.is_remote_frame:
                    self._dispatch(cob, data)
                elif cob == HEARTBEAT_BASE + self.node_id and self.node_id != UNCONFIGURED:
                    self._on_guarding()
            except Exception as exc:
                self._internal_error(exc)

    def _dispatch(self, cob: int, data: bytes) -> None:
        if cob == LSS_MASTER_ID:
            reply = self.lss.handle(data)
            if reply is not None:
                self._send(LSS_SLAVE_ID, reply)
        elif self.node_id == UNCONFIGURED:
            return
        elif cob == NMT_ID:
            self._on_nmt(data)
        elif self.state == NmtState.STOPPED:
            return
        elif cob == SDO_RX_BASE + self.node_id:
            reply = self.sdo.handle(data)
            if reply is not None:
                self._send(SDO_TX_BASE + self.node_id, reply)
        elif cob == self.comm.sync_cob_id & 0x7FF and len(data) <= 1:
            if self.state == NmtState.OPERATIONAL:
                self._on_sync()
        elif self.state == NmtState.OPERATIONAL and (p := self.pdos.rpdo_for(cob)) is not None:
            self._on_rpdo(p, data)

    # -- node guarding and LSS ---------------------------------------------------------------

    def _on_guarding(self) -> None:
        """A master's guarding request (RTR on 0x700 + node-ID): state with the toggle bit."""
        self._send(HEARTBEAT_BASE + self.node_id, self.guard.reply(self.state, time.monotonic()))
        self._send_emcy(self.emcy.clear(Emcy.LIFE_GUARD, NODE, 0))

    def lss_address(self) -> tuple[int, int, int, int]:
        return self.comm.identity.as_tuple()

    def lss_store(self, node_id: int, bitrate: int) -> int:
        if self.parameters is None:
            return 1
        try:
            self.parameters.put("lss", {"node_id": node_id, "bitrate": bitrate})
        except OSError as exc:
            log.error("CANopen: LSS store configuration failed: %s", exc)
            return 2
        return 0

    def lss_start(self) -> None:
        self._reset_communication()
        self._boot()

    def lss_activate_bitrate(self, bitrate: int, delay_ms: int) -> None:
        """Take the new bit rate at once. A bus of our own whose interface takes the bit
        rate from python-can (pcan, kvaser, slcan...) is opened again with it; on socketcan
        the rate is the interface's (``ip link``), and virtual buses have none."""
        old, self.bitrate = self.bitrate, bitrate
        interface = self.settings.canopen.interface
        if self._own_bus and self._bus is not None and interface not in RATE_SET_ELSEWHERE:
            try:
                bus = self._open_bus(bitrate)
            except CanopenBusError as exc:
                log.error("%s: staying at %d bit/s", exc, old)
                self.bitrate = old
                return
            self._bus, stale = bus, self._bus
            stale.shutdown()
        log.info("CANopen node %d: bit rate %d -> %d (LSS)", self.node_id, old, bitrate)

    def _internal_error(self, exc: BaseException) -> None:
        """Log (once until it clears) and announce EMCY 0x6100; the node goes on."""
        try:
            frame = self.emcy.raise_(Condition(Emcy.SOFTWARE, ErrorBit.GENERIC, DEVICE, 0))
            if frame is not None:
                log.error("CANopen node %d: internal error", self.node_id, exc_info=exc)
            else:
                log.debug("CANopen node %d: internal error again: %r", self.node_id, exc)
            self._send_emcy(frame)
        except Exception:  # the error path itself must not fail
            log.exception("CANopen: cannot report an internal error")

    # -- SYNC and PDOs ---------------------------------------------------------------------

    def _on_sync(self) -> None:
        self._catch_up()  # a snapshot published just before the SYNC counts for it
        for p in self.pdos.rpdo:
            if p.valid and p.trans_type <= 240 and p.rx_data is not None:
                data, p.rx_data = p.rx_data, None
                self._apply_rpdo(p, data)
        sample = Sample(self.values)
        for p in self.pdos.tpdo:
            if not p.valid or p.trans_type > 240:
                continue
            if p.trans_type == 0:
                send = p.pending
            else:
                p.sync_count += 1
                send = p.sync_count >= p.trans_type
            if send:
                p.sync_count = 0
                self._send_tpdo(p, sample, time.monotonic(), event=False)

    def _on_rpdo(self, p: Pdo, data: bytes) -> None:
        if p.trans_type <= 240:
            p.rx_data = data  # applied at the next SYNC
        else:
            self._apply_rpdo(p, data)

    def _apply_rpdo(self, p: Pdo, data: bytes) -> None:
        parts = self.pdos.unpack(p, data)
        if parts is None:
            self._send_emcy(self.emcy.raise_(
                Condition(Emcy.PDO_LENGTH, ErrorBit.COMMUNICATION, RPDO, p.number, len(data))))
            return
        for entry, raw in parts:
            try:
                self.write(entry, raw)
            except SdoAbort as exc:
                log.warning("CANopen RPDO%d: %s not written: %s", p.number, entry.name, exc)
        self._send_emcy(self.emcy.clear(Emcy.PDO_LENGTH, RPDO, p.number))

    def _send_tpdo(self, p: Pdo, sample: Sample, now: float, event: bool) -> None:
        data = self.pdos.compose(p, lambda e: self._read(e, sample))
        self._send(p.can_id, data)
        p.sent(now, event)

    # -- timers and snapshots --------------------------------------------------------------

    def _on_snapshot(self, snap: Snapshot) -> None:
        """Meter listener (device loop thread): record and wake, never block."""
        self._latest = snap
        self._wake.set()

    def _next_deadline(self) -> float | None:
        times = [self._next_heartbeat, self.sdo.deadline, self.emcy.due(), self.guard.deadline()]
        if self.state == NmtState.OPERATIONAL:
            times += [p.due() for p in self.pdos.tpdo]
        times = [t for t in times if t is not None]
        return min(times) if times else None

    def _catch_up(self) -> None:
        snap = self._latest
        if snap is not None and snap is not self._handled:
            self._handled = snap
            self._on_new_snapshot(snap)

    def _tick(self, now: float) -> None:
        self._catch_up()
        if self._next_heartbeat is not None and now >= self._next_heartbeat:
            self._send(HEARTBEAT_BASE + self.node_id, bytes([self.state]))
            period = self.heartbeat_ms / 1000
            self._next_heartbeat = max(self._next_heartbeat + period, now) if period else None
        if (timeout := self.sdo.poll(now)) is not None:
            self._send(SDO_TX_BASE + self.node_id, timeout)
        if self.guard.lost(now):  # the master stopped guarding: life guard event
            self._send_emcy(self.emcy.raise_(
                Condition(Emcy.LIFE_GUARD, ErrorBit.COMMUNICATION, NODE, 0)))
        self._flush_emcy(now)
        if self.state == NmtState.OPERATIONAL:
            sample = None
            for p in self.pdos.tpdo:
                due = p.due()
                if due is not None and now >= due:
                    sample = sample or Sample(self.values)
                    self._send_tpdo(p, sample, now, event=p.pending)

    def _on_new_snapshot(self, snap: Snapshot) -> None:
        for frame in self.emcy.update(conditions(snap)):
            self._send_emcy(frame)
        self._send_emcy(self.emcy.clear(Emcy.SOFTWARE, DEVICE, 0))
        if self.state == NmtState.OPERATIONAL:
            for p in self.pdos.tpdo:
                if p.valid and (p.event_driven or p.trans_type == 0):
                    p.pending = True

    # -- object access (the SDO server's ObjectAccess) -------------------------------------

    def entry(self, index: int, sub: int) -> Entry:
        return self.dictionary.entry(index, sub)

    def read(self, entry: Entry) -> bytes:
        return self._read(entry, None)

    def _read(self, entry: Entry, sample: Sample | None) -> bytes:
        if entry.kind == "canopen":  # the active node-ID and bit rate (LSS may change them)
            return encode(entry.data_type,
                          self.node_id if entry.index == NODE_ID_INDEX else self.bitrate)
        if entry.kind not in ("comm", "const"):
            return self.values.read(entry, sample)
        return encode(entry.data_type, self.comm.read(entry))

    def write(self, entry: Entry, data: bytes) -> None:
        """Decode, check and apply one write: every SDO download and RPDO entry comes here."""
        if not entry.writable:
            raise SdoAbort(Abort.READ_ONLY, f"{entry.name} is read-only")
        size = entry.size
        if size is not None and len(data) != size:
            raise SdoAbort(Abort.LENGTH, f"{entry.name}: {len(data)} bytes, expected {size}")
        value = decode(entry.data_type, data)
        if entry.kind != "comm":
            self.values.write(entry, value)
            return
        self.comm.write(entry, value)
        if entry.index == 0x1017:
            self._next_heartbeat = time.monotonic() + value / 1000 if value else None
        self._wake.set()
