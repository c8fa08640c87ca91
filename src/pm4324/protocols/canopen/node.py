"""The CANopen slave (PM-4324-CPS): our own CiA 301 services on a python-can bus.

Why not python-canopen's ``LocalNode``: in canopen 2.4.1 its SDO server checks access only
after a segmented download has received all its data, never checks the length against the
data type, does not tie PDOs to the NMT state (``tpdo.start`` transmits in any state), keeps
no PDO communication or mapping parameters behind SDO (no dynamic mapping with the CiA 301
rules) and has no EMCY from the application. Those are what a real master relies on, so the
node implements the services itself (sdo.py, pdo.py, emcy.py), and python-canopen's
``RemoteNode`` serves as the independent master in the tests.

Threads: one receives frames (NMT, SYNC, SDO, RPDO) and answers them; one runs the timers
(heartbeat, event-driven TPDOs, SDO timeout) and reacts to new snapshots. Both work under
one lock. The meter's snapshot listener only records the snapshot and wakes the timer
thread, so the device loop never waits for the bus. Writes that change the meter (settings,
relays, energy reset) are run in the device loop's own thread when the server was started
from it (``await start()``), as the Modbus servers' writes are.

NMT: boot-up message, then pre-operational. SDO works in pre-operational and operational;
PDOs (TPDO and RPDO) only in operational; in stopped only NMT and the heartbeat. EMCY is
sent in pre-operational and operational. Reset communication restores 0x1000..0x1FFF to
their power-on values; reset node does the same (the manufacturer objects are the meter's
live values and persisted settings, which a reset does not change); both send a boot-up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from typing import Any

import can

from pm4324.config.settings import Settings
from pm4324.protocols.canopen.codes import (
    COB_EXTENDED,
    COB_RESERVED_BITS,
    HEARTBEAT_BASE,
    NMT_ID,
    SDO_RX_BASE,
    SDO_TX_BASE,
    Abort,
    Emcy,
    ErrorBit,
    NmtCommand,
    NmtState,
    SdoAbort,
    restricted_can_id,
)
from pm4324.protocols.canopen.emcy import DEVICE, RPDO, Condition, EmcyProducer, conditions
from pm4324.protocols.canopen.objects import Entry, decode, encode
from pm4324.protocols.canopen.od import PRODUCT_CODES, build_dictionary, default_dictionary
from pm4324.protocols.canopen.pdo import Pdo, PdoTable
from pm4324.protocols.canopen.sdo import SdoServer
from pm4324.protocols.canopen.values import Sample, Values
from pm4324.registers.backend import MeterControl
from pm4324.registers.image import FIRMWARE_VERSION, MapBackend
from pm4324.registers.table import load_map
from pm4324.snapshot import Snapshot

log = logging.getLogger(__name__)

RX_POLL_S = 0.1  # the receive thread checks for stop this often
MAX_IDLE_S = 1.0  # the timer thread wakes at least this often
CALL_TIMEOUT_S = 2.0  # a write waits this long for the device loop


class CanopenBusError(OSError):
    """The configured python-can bus cannot be opened (the message says which and why)."""


class CanopenServer:
    """A CANopen slave for one meter on one python-can bus."""

    def __init__(self, control: MeterControl, settings: Settings, *, bus: can.BusABC | None = None,
                 backend: MapBackend | None = None, sdo_timeout_s: float = 1.0):
        co = settings.canopen
        if not 1 <= co.node_id <= 127:
            raise ValueError(f"CANopen node-ID {co.node_id}: must be 1..127")
        self.control = control
        self.settings = settings
        self.node_id = co.node_id
        self._bus = bus
        self._own_bus = bus is None
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._latest: Snapshot | None = control.snapshot
        self._handled: Snapshot | None = None
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        if backend is None:  # our listener first: TPDOs of 0x3200/0x3201 need no image
            control.add_listener(self._on_snapshot)
        self.backend = backend or MapBackend(control)
        rm = self.backend.register_map
        self.dictionary = default_dictionary(settings.model) if rm is load_map() \
            else build_dictionary(rm, settings.model)
        self.values = Values(control, self.backend, co, self._call_in_loop)
        self.sdo = SdoServer(self, sdo_timeout_s)
        self.sdo.on_error = self._internal_error
        self.pdos = PdoTable(self.dictionary, self.node_id)
        self.emcy = EmcyProducer()
        self.state = NmtState.INITIALISING
        self.heartbeat_ms = 0
        self.sync_cob_id = 0
        self._next_heartbeat: float | None = None
        self.frames_sent = 0
        self.send_errors = 0
        self._reset_communication()
        if backend is not None:
            control.add_listener(self._on_snapshot)

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the bus, send the boot-up message and serve (from the device loop)."""
        self._loop = asyncio.get_running_loop()
        self.open()

    async def stop(self) -> None:
        await asyncio.to_thread(self.close)

    def open(self) -> None:
        """Thread-based start (tests, scripts): meter writes run in the node's threads."""
        if self._started:
            return
        if self._bus is None:
            co = self.settings.canopen
            try:
                self._bus = can.Bus(interface=co.interface, channel=co.channel or None,
                                    bitrate=co.bitrate)
            except (can.CanError, OSError, ValueError, ImportError) as exc:
                raise CanopenBusError(f"CANopen: cannot open {co.interface}:{co.channel}: "
                                      f"{exc}") from exc
        self._stop.clear()
        self._started = True
        with self._lock:
            self._boot()
        for target, name in ((self._rx_loop, "rx"), (self._timer_loop, "timers")):
            t = threading.Thread(target=target, name=f"canopen-{self.node_id}-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        if not self._started:
            return
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=5.0)
        self._threads.clear()
        self._started = False
        if self._own_bus and self._bus is not None:
            self._bus.shutdown()
            self._bus = None

    def __enter__(self) -> CanopenServer:
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call_in_loop(self, fn, *args):
        """Run ``fn(*args)`` in the device loop's thread (if started there) and return its result."""
        loop = self._loop
        if loop is None or loop.is_closed() or _in_thread_of(loop):
            return fn(*args)
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the waiting thread
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=CALL_TIMEOUT_S)

    # -- sending ---------------------------------------------------------------------------

    def _send(self, cob_id: int, data: bytes) -> None:
        msg = can.Message(arbitration_id=cob_id, data=data, is_extended_id=False)
        try:
            assert self._bus is not None
            self._bus.send(msg)
            self.frames_sent += 1
        except (can.CanError, OSError) as exc:
            self.send_errors += 1
            log.warning("CANopen: cannot send 0x%03X: %s", cob_id, exc)

    def _send_emcy(self, frame: bytes | None) -> None:
        if frame is not None and self.state in (NmtState.PRE_OPERATIONAL, NmtState.OPERATIONAL):
            self._send(0x80 + self.node_id, frame)

    # -- NMT -------------------------------------------------------------------------------

    def _reset_communication(self) -> None:
        d = self.dictionary
        self.heartbeat_ms = d.entry(0x1017, 0).default
        self.sync_cob_id = d.entry(0x1005, 0).default
        self.pdos.reset()
        self.sdo.reset()
        self.emcy.reset()
        self._handled = None  # re-evaluate EMCY conditions on the newest snapshot

    def _boot(self) -> None:
        """Initialisation done: boot-up message, then pre-operational."""
        self.state = NmtState.INITIALISING
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

    def _rx_loop(self) -> None:
        while not self._stop.is_set():
            try:
                assert self._bus is not None
                msg = self._bus.recv(RX_POLL_S)
            except Exception as exc:  # a broken datagram or driver error: log, go on
                log.warning("CANopen: receive failed: %s", exc)
                self._stop.wait(RX_POLL_S)
                continue
            if msg is not None:
                self.handle(msg)

    def handle(self, msg: can.Message) -> None:
        """Process one received frame (never raises)."""
        if msg.is_error_frame or msg.is_extended_id or msg.is_remote_frame or msg.is_fd:
            return
        cob, data = msg.arbitration_id, bytes(msg.data)
        with self._lock:
            try:
                self._dispatch(cob, data)
            except Exception as exc:
                self._internal_error(exc)

    def _dispatch(self, cob: int, data: bytes) -> None:
        if cob == NMT_ID:
            self._on_nmt(data)
        elif self.state == NmtState.STOPPED:
            return
        elif cob == SDO_RX_BASE + self.node_id:
            reply = self.sdo.handle(data)
            if reply is not None:
                self._send(SDO_TX_BASE + self.node_id, reply)
        elif cob == self.sync_cob_id & 0x7FF and len(data) <= 1:
            if self.state == NmtState.OPERATIONAL:
                self._on_sync()
        elif self.state == NmtState.OPERATIONAL and (p := self.pdos.rpdo_for(cob)) is not None:
            self._on_rpdo(p, data)

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

    def _timer_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                deadline = self._next_deadline()
            timeout = MAX_IDLE_S if deadline is None else deadline - time.monotonic()
            if timeout > 0:
                self._wake.wait(min(timeout, MAX_IDLE_S))
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                try:
                    self._tick(time.monotonic())
                except Exception as exc:
                    self._internal_error(exc)

    def _next_deadline(self) -> float | None:
        times = [self._next_heartbeat, self.sdo.deadline]
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
        if entry.kind not in ("comm", "const"):
            return self.values.read(entry, sample)
        return encode(entry.data_type, self._comm_value(entry))

    def _comm_value(self, e: Entry) -> int | str:
        index, sub = e.index, e.sub
        found = self.pdos.find(index)
        if found is not None and (found[1] or sub > 0):
            return self.pdos.read(found[0], found[1], sub)
        if index == 0x1001:
            return self.emcy.register
        if index == 0x1017:
            return self.heartbeat_ms
        if index == 0x1005:
            return self.sync_cob_id
        if index == 0x1008:
            return f"{self.settings.model}-CPS"
        if index == 0x100A:
            return FIRMWARE_VERSION
        if index == 0x1018 and sub == 2:
            return PRODUCT_CODES[self.settings.model]
        if index == 0x1018 and sub == 4:
            return self.node_id  # serial number: the node-ID (one emulated meter per node)
        return e.default + self.node_id if e.node_relative else e.default

    def write(self, entry: Entry, data: bytes) -> None:
        """Decode, check and apply one write (SDO download or RPDO)."""
        if not entry.writable:
            raise SdoAbort(Abort.READ_ONLY, f"{entry.name} is read-only")
        size = entry.size
        if size is not None and len(data) != size:
            raise SdoAbort(Abort.LENGTH, f"{entry.name}: {len(data)} bytes, expected {size}")
        value = decode(entry.data_type, data)
        if entry.kind != "comm":
            self.values.write(entry, value)
            return
        found = self.pdos.find(entry.index)
        if found is not None:
            self.pdos.write(found[0], found[1], entry.sub, value)
        elif entry.index == 0x1017:
            self.heartbeat_ms = value
            self._next_heartbeat = time.monotonic() + value / 1000 if value else None
        elif entry.index == 0x1005:
            if value & (0x4000_0000 | COB_EXTENDED | COB_RESERVED_BITS) or restricted_can_id(value & 0x7FF):
                raise SdoAbort(Abort.VALUE_RANGE, f"SYNC COB-ID 0x{value:08X} (consumer only)")
            self.sync_cob_id = value
        else:
            raise SdoAbort(Abort.READ_ONLY, f"{entry.name} is read-only")
        self._wake.set()


def _in_thread_of(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
