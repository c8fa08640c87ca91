"""Polling: one thread per serial line or CAN bus, one request at a time on it; every Modbus
TCP meter on one asyncio loop (``hub.tcp_line``).

Every meter on one RS-485
port shares one line (one ``ModbusSerialClient``: pymodbus keeps the 3.5-character silence
between frames, and a request is answered or timed out before the next one goes out); a
CANopen bus is one line (SDO uploads, node by node). Each meter is polled at its own
interval; one that does not answer is retried with back-off (interval x 2, 4, 8 ... up to
``max_backoff_s``) until it answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from queue import Queue
from typing import Any

from pm4324.client.modbus import ReadError, modbus_reader
from pm4324.client.plan import ReadPlan
from pm4324.hub.config import MeterConfig

log = logging.getLogger(__name__)


@dataclass
class Reading:
    """What one poll gave: the to_dict keys, or None and why not."""

    key: str
    time: float  # the hub's clock when the answer came
    data: dict[str, Any] | None
    problem: str = ""
    late_s: float = 0.0  # how far behind its due time this poll started


class _Meter:
    def __init__(self, config: MeterConfig):
        self.config = config
        self.due = 0.0
        self.failures = 0

    def schedule(self, now: float, ok: bool, max_backoff: float) -> None:
        self.failures = 0 if ok else self.failures + 1
        delay = self.config.poll_s if ok else min(max_backoff, self.config.poll_s * 2 ** self.failures)
        self.due = max(self.due + self.config.poll_s, now) if ok else now + delay


def _modbus_client(m: MeterConfig) -> Any:
    from pymodbus.client import ModbusSerialClient

    fmt = m.data_format
    return ModbusSerialClient(m.address, baudrate=m.baud, bytesize=8, parity=fmt[0],
                              stopbits=int(fmt[2]), timeout=m.timeout_s, retries=m.retries)


def _modbus_read(client: Any, m: MeterConfig, plan: ReadPlan) -> dict[str, Any] | None:
    if not client.connected and not client.connect():
        raise ReadError(f"cannot connect to {m.address}")
    return plan.read(modbus_reader(client, m.unit, m.address), m.word_order)


def _canopen_read(m: MeterConfig) -> dict[str, Any] | None:
    from pm4324.client.canopen import parse_canopen, read_canopen

    interface, channel = parse_canopen(m.address)
    d = read_canopen(interface, channel, m.unit, m.meters, timeout=m.timeout_s)
    return d if d.get("time") is not None or any(c.get("p_w") is not None for c in d["cts"]) else None


class Line(threading.Thread):
    """Polls the meters of one line until ``stop`` is set; readings go to ``out``."""

    def __init__(self, name: str, meters: list[MeterConfig], out: Queue, stop: threading.Event,
                 max_backoff_s: float = 60.0):
        super().__init__(name=f"hub-line-{name}", daemon=True)
        self.meters = [_Meter(m) for m in meters]
        self.out, self.stop, self.max_backoff_s = out, stop, max_backoff_s
        self._client: Any = None
        self._plans = {m.meters: ReadPlan(m.meters) for m in meters if m.transport == "rtu"}

    def _read(self, m: MeterConfig) -> dict[str, Any] | None:
        if m.transport == "canopen":
            return _canopen_read(m)
        if self._client is None:
            self._client = _modbus_client(m)
        return _modbus_read(self._client, m, self._plans[m.meters])

    def run(self) -> None:
        now = time.monotonic()
        for k, m in enumerate(self.meters):  # spread the first polls over one interval
            m.due = now + m.config.poll_s * k / len(self.meters)
        try:
            while not self.stop.is_set():
                m = min(self.meters, key=lambda x: x.due)
                wait = m.due - time.monotonic()
                if wait > 0 and self.stop.wait(wait):
                    break
                self.out.put(self._poll(m))
        finally:
            if self._client is not None:
                self._client.close()

    def _poll(self, m: _Meter) -> Reading:
        cfg = m.config
        try:
            data, problem = self._read(cfg), ""
            if data is None:
                problem = f"{cfg.address} unit {cfg.unit} refused every request"
        except ReadError as exc:
            data, problem = None, str(exc)
        except Exception as exc:  # a bug in decoding one meter must not stop the line
            log.exception("polling %s failed", cfg.key)
            data, problem = None, f"{type(exc).__name__}: {exc}"
        m.schedule(time.monotonic(), data is not None, self.max_backoff_s)
        return Reading(cfg.key, time.time(), data, problem)


def start_lines(meters: tuple[MeterConfig, ...], out: Queue, stop: threading.Event,
                max_backoff_s: float, factory: Callable = Line) -> list[threading.Thread]:
    from pm4324.hub.tcp_line import TcpLine

    by_line: dict[str, list[MeterConfig]] = {}
    for m in meters:
        if m.transport != "tcp":
            by_line.setdefault(m.line, []).append(m)
    lines: list[threading.Thread] = [factory(name, ms, out, stop, max_backoff_s)
                                     for name, ms in by_line.items()]
    tcp = [m for m in meters if m.transport == "tcp"]
    if tcp:
        lines.append(TcpLine(tcp, out, stop, max_backoff_s))
    for line in lines:
        line.start()
    return lines
