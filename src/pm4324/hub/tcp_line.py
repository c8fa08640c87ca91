"""All Modbus TCP meters of a hub, polled from ONE asyncio loop (docs/hub.md).

A thread per meter made 200 meters 200 threads fighting over the GIL, each request a
blocking round trip. Here every meter is a coroutine on one loop, polled at its own phase of
the interval (meter k of n starts at k/n of it, so 200 meters at 1 s are 200 readings spread
over the second instead of a burst), with its read plan pipelined on its own connection
(``client.modbus_async``). ``late_s`` says how far behind its due time a poll started: the
measure of whether the loop keeps up.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from queue import Queue

from pm4324.client.modbus import ReadError, WordOrderError, parse_host_port
from pm4324.client.modbus_async import AsyncModbusTcp
from pm4324.client.plan import ReadPlan
from pm4324.hub.config import MeterConfig
from pm4324.hub.poller import Reading, _Meter

log = logging.getLogger(__name__)


class TcpLine(threading.Thread):
    """Polls every TCP meter until ``stop`` is set; readings go to ``out``."""

    def __init__(self, meters: list[MeterConfig], out: Queue, stop: threading.Event,
                 max_backoff_s: float = 60.0):
        super().__init__(name="hub-tcp", daemon=True)
        self.meters, self.out, self.stop, self.max_backoff_s = meters, out, stop, max_backoff_s
        self._plans: dict[tuple[int, ...], ReadPlan] = {}

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        start = asyncio.get_running_loop().time()
        n = len(self.meters)
        tasks = [asyncio.create_task(self._poll(cfg, start + cfg.poll_s * k / n))
                 for k, cfg in enumerate(self.meters)]
        while not self.stop.is_set():
            await asyncio.sleep(0.1)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _plan(self, meters: tuple[int, ...]) -> ReadPlan:
        if meters not in self._plans:  # one plan for every meter that reads the same Meters
            self._plans[meters] = ReadPlan(meters)
        return self._plans[meters]

    async def _poll(self, cfg: MeterConfig, first: float) -> None:
        loop = asyncio.get_running_loop()
        host, port = parse_host_port(cfg.address)
        client = AsyncModbusTcp(host, port, cfg.unit, cfg.timeout_s, cfg.pipeline)
        plan, m = self._plan(cfg.meters), _Meter(cfg)
        m.due = first
        try:
            while True:
                if (wait := m.due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                late = max(0.0, loop.time() - m.due)
                data, problem = await self._read(client, plan, cfg)
                if data is None:
                    m.schedule(loop.time(), False, self.max_backoff_s)
                else:  # keep the grid: an overrun shows as the next poll's lateness
                    m.failures = 0
                    m.due += cfg.poll_s * max(1, math.floor((loop.time() - m.due) / cfg.poll_s))
                self.out.put(Reading(cfg.key, time.time(), data, problem, late))
        finally:
            client.close()

    async def _read(self, client: AsyncModbusTcp, plan: ReadPlan, cfg: MeterConfig
                    ) -> tuple[dict | None, str]:
        problem = ""
        for _ in range(cfg.retries + 1):
            try:
                data = await client.read(plan, cfg.word_order)
            except WordOrderError as exc:
                return None, str(exc)
            except ReadError as exc:
                problem = str(exc)
                continue
            except Exception as exc:  # a bug in decoding one meter must not stop the others
                log.exception("polling %s failed", cfg.key)
                return None, f"{type(exc).__name__}: {exc}"
            if data is None:
                return None, f"{cfg.address} unit {cfg.unit} refused every request"
            return data, ""
        return None, problem
