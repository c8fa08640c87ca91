"""The meter: one second at a time, source -> engine -> energy registers -> snapshot.

``Meter.step()`` reads one second of samples (sample-count based, so replay is
deterministic), runs the engine, adds the energy increments to the registers and publishes
one immutable ``Snapshot`` to every listener. ``Meter.run()`` paces that loop against the
wall clock (or N times faster), so a snapshot is out a few milliseconds after its second ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pm4324.device.energy import EnergyRegisters
from pm4324.device.settings import N_CTS, N_METERS, Settings, validate
from pm4324.device.snapshot import CtValues, MainValues, MeterValues, Snapshot
from pm4324.metering.engine import Engine, StepResult
from pm4324.sources.base import Source

log = logging.getLogger(__name__)

Listener = Callable[[Snapshot], None]


class Meter:
    """A running PM-4324(A). Implements ``registers.backend.MeterControl``."""

    def __init__(self, settings: Settings, source: Source, *, settings_path: str | None = None,
                 start_time: float | None = None):
        if source.n_mains != settings.n_mains:
            raise ValueError(f"source has {source.n_mains} main(s), {settings.model} has "
                             f"{settings.n_mains}")
        if abs(source.sample_rate_hz - settings.sample_rate_hz) > 1e-9:
            settings = _with_rate(settings, source.sample_rate_hz)
        self._settings = settings
        self.source = source
        self.settings_path = settings_path
        self.engine = Engine(settings)
        self.ct_registers = EnergyRegisters(N_CTS)
        self.meter_registers = EnergyRegisters(N_METERS)
        self._relays = (False, False)
        self._snapshot: Snapshot | None = None
        self._listeners: list[Listener] = []
        self.seq = 0
        self.start_time = time.time() if start_time is None else start_time
        self.finished = False

    # -- MeterControl ----------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def relays(self) -> tuple[bool, bool]:
        return self._relays

    def add_listener(self, callback: Listener) -> None:
        self._listeners.append(callback)

    def apply_settings(self, new: Settings) -> None:
        validate(new)
        if new.model != self._settings.model or new.sample_rate_hz != self._settings.sample_rate_hz:
            raise ValueError("model and sample rate change only with a restart")
        self.engine.configure(new)
        self._settings = new
        if self.settings_path:
            from pm4324.device.settings_file import save_settings

            save_settings(new, Path(self.settings_path))
        log.info("settings changed")

    def set_relay(self, index: int, closed: bool) -> None:
        relays = list(self._relays)
        relays[index] = bool(closed)
        self._relays = (relays[0], relays[1])
        log.info("relay %d %s", index + 1, "closed" if closed else "open")

    def reset_energy(self, meter: int | None) -> None:
        if meter is None:
            self.ct_registers.reset()
            self.meter_registers.reset()
        else:
            self.ct_registers.reset(slice(3 * (meter - 1), 3 * meter))
            self.meter_registers.reset(np.array([meter - 1]))
        log.info("energy reset: %s", "all" if meter is None else f"Meter {meter}")

    # -- the loop --------------------------------------------------------------------------

    def _block_length(self) -> int:
        fs = self._settings.sample_rate_hz
        return int(round((self.seq + 1) * fs)) - int(round(self.seq * fs))

    def step(self) -> Snapshot | None:
        """Process the next second; None when a finite source is exhausted."""
        block = self.source.read(self._block_length())
        if block is None:
            self.finished = True
            return None
        result = self.engine.step(block.voltages, block.currents, block.start,
                                  (self.source.full_scale_v, self.source.full_scale_i))
        return self._publish(result)

    def _publish(self, r: StepResult) -> Snapshot:
        self.ct_registers.add(r.ct_energy)
        self.meter_registers.add(r.meter_energy)
        snap = Snapshot(
            seq=self.seq,
            time=self.start_time + (self.seq + 1) * self._time_scale(),
            settings=self._settings,
            ct=CtValues(**r.ct),
            meter=MeterValues(**r.meter),
            main=MainValues(**r.main),
            ct_energy=self.ct_registers.energies(),
            meter_energy=self.meter_registers.energies(),
            relays=self._relays,
            duration_s=r.duration_s,
        )
        self.seq += 1
        self._snapshot = snap
        for listener in self._listeners:
            try:
                listener(snap)
            except Exception:  # one broken listener must not stop the meter
                log.exception("snapshot listener failed")
        return snap

    def _time_scale(self) -> float:
        n = self._block_length()
        return n / self._settings.sample_rate_hz

    async def run(self, speed: float = 1.0, seconds: float | None = None,
                  stop: asyncio.Event | None = None) -> None:
        """Run until the source ends, ``seconds`` have been measured, or ``stop`` is set.

        Real-time sources are paced so second k is published at start + (k+1)/speed; a
        finite (replay) source runs as fast as it can unless a speed is given.
        """
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        paced = speed > 0 and (self.source.realtime or speed != 1.0)
        while not (stop is not None and stop.is_set()):
            if seconds is not None and self.seq >= seconds:
                return
            if paced:
                due = t0 + (self.seq + 1) / speed
                delay = due - loop.time()
                if delay > 0:
                    if stop is None:
                        await asyncio.sleep(delay)
                    else:
                        try:
                            await asyncio.wait_for(stop.wait(), delay)
                            return
                        except TimeoutError:
                            pass
            if self.step() is None:
                return
            if not paced:
                await asyncio.sleep(0)  # let servers answer between seconds


def _with_rate(settings: Settings, fs: float) -> Settings:
    from dataclasses import replace

    return replace(settings, sample_rate_hz=float(fs))
