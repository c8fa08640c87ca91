"""The meter: one second at a time, source -> engine -> energy registers -> snapshot.

``Meter.step()`` reads one second of samples (sample-count based, so replay is
deterministic), runs the engine, adds the energy increments to the registers, advances the
alarm rules and the relays they drive, **commits the registers to the state store** (in
the committer's thread, device/commit.py; every ``[store] commit_interval_s`` seconds, 1 by
default), and only then publishes one immutable ``Snapshot`` to every listener: whatever a
listener shows (a JSON line, a Modbus register) is already on disk. ``Meter.run()`` paces
that loop against the wall clock (or N times faster), so a snapshot is out a few
milliseconds after its second ends, and runs each step in a worker thread: the protocol
servers' event loop never waits for the metering or its commit, and a finished snapshot is
handed over by one reference assignment (listeners are called in that thread; settings
changes reach the engine between two steps).

Writes from the interfaces (relays, energy resets, acknowledgements, settings) return a
future that is True once the change is on disk: the protocol servers answer only then.
``status`` is the live meter status word (snapshot.Status): no data yet (before the first
second, when ``snapshot`` is a power-up snapshot with the restored energies and NaN
values), not saved, clock stepped, voltage range; every change of it is one console line.

With a store, the meter starts from the store's newest record (energy registers, manual
relay states for ``power_up = "last"``, unacknowledged alarm latches) and logs a power-up
event. Relay and alarm behaviour: docs/relays-and-alarms.md; the store: device/store.py.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from pm4324.config.settings import N_CTS, N_METERS, Settings, validate, voltage_range_warnings
from pm4324.config.settings_writeback import (
    SettingsConflict,
    SettingsWriter,
    changes_between,
    describe,
)
from pm4324.device.alarms import AlarmEngine, Transition
from pm4324.device.commit import Committer
from pm4324.device.device_faults import OFF, DeviceFaults
from pm4324.device.energy import EnergyRegisters
from pm4324.device.events import Event
from pm4324.device.powerup import no_data_snapshot
from pm4324.device.pq import DevicePq
from pm4324.device.relays import RecordingDriver, RelayDriver, RelayModeError, SupervisedDriver
from pm4324.device.saving import Durable, Saving, power_up_text
from pm4324.device.store import Store
from pm4324.metering.engine import Engine, StepResult
from pm4324.snapshot import AlarmStatus, CtValues, MainValues, MeterValues, Snapshot, Status
from pm4324.sources.base import SampleBlock, Source

log = logging.getLogger(__name__)

Listener = Callable[[Snapshot], None]
RECENT_EVENTS = 1000  # kept in memory (all of them also go to the store, when there is one)


class Meter(Saving, DeviceFaults):
    """A running PM-4324(A). Implements ``registers.backend.MeterControl``."""

    def __init__(self, settings: Settings, source: Source, *, settings_path: str | None = None,
                 start_time: float | None = None, store: Store | None = None,
                 driver: RelayDriver | None = None, harmonic_angles: bool = False,
                 wall_clock: Callable[[], float] = time.time):
        if source.n_mains != settings.n_mains:
            raise ValueError(f"source has {source.n_mains} main(s), {settings.model} has "
                             f"{settings.n_mains}")
        if abs(source.sample_rate_hz - settings.sample_rate_hz) > 1e-9:
            settings = _with_rate(settings, source.sample_rate_hz)
        self._settings = settings
        self.source = source
        self.settings_path = settings_path
        self._settings_file = SettingsWriter(Path(settings_path), settings) if settings_path \
            else None
        self.engine = Engine(settings, harmonic_angles)  # angles: for JSON --harmonics
        self._engine_settings: Settings | None = None  # for the engine at the next step
        self.store = store
        # the composition root picks a real driver; every driver is retried until it works
        self.driver = SupervisedDriver(driver or RecordingDriver())
        self.boot = store.boot if store else 1
        self.events: deque[Event] = deque(maxlen=RECENT_EVENTS)
        self._unsaved: deque[Event] = deque(maxlen=RECENT_EVENTS)  # not yet in the store
        self._not_saved = False
        self._voltage_warnings: list[str] = []  # nominal voltages outside the inputs' range
        self._lock = threading.RLock()  # protocol threads (CANopen) vs the 1-s loop
        self._listeners: list[Listener] = []
        self.seq = 0
        self._wall = wall_clock
        self._clock_offset = wall_clock() - time.monotonic()
        self._stepped_until = -1.0  # monotonic time until which CLOCK_STEPPED is set
        self._shown_status = 0
        self.start_time = wall_clock() if start_time is None else start_time
        self.pq = DevicePq(self.engine, settings, self.start_time)  # hooked into the engine
        self._last_end = self.start_time  # the meter's clock at the end of the last second
        self._last_end_mono: float | None = None
        self._speed = 0.0  # meter seconds per wall second while run() paces; 0 = not paced
        self.finished = False
        self._ahead: SampleBlock | None = None  # finite sources: the next block, read early
        restored = store.restored if store else None
        self.ct_registers = restored.ct if restored else EnergyRegisters(N_CTS)
        self.meter_registers = restored.meter if restored else EnergyRegisters(N_METERS)
        self.alarms = AlarmEngine(settings.alarms, restored.latched if restored else None)
        for kind, text in store.notes if store else ():
            self._event(kind, text)
        self._event("power_up", power_up_text(store))
        self._check_clock_at_power_up()
        self._check_voltage_range(settings)
        self._relays = (False, False)
        for k, relay in enumerate(settings.relays.relays):
            if relay.mode == "alarm":
                closed, why = self.alarms.demand(k + 1, relay.combine), "power-up, alarm mode"
            elif relay.power_up == "last":
                closed, why = bool(restored and restored.relays[k]), "power-up, last state"
            else:
                closed, why = relay.power_up == "closed", f"power-up {relay.power_up}"
            self._switch(k, closed, why, always=True)
        self._snapshot: Snapshot = no_data_snapshot(
            settings, self.ct_registers, self.meter_registers, self._relays,
            self.alarms.status(), self.start_time, int(Status.NO_DATA))
        self._committer = Committer(self._commit) if store else None
        self._save_now()

    # -- MeterControl ----------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        """The newest second; before the first one, the power-up snapshot (seq -1: restored
        energies, NaN values, status NO_DATA)."""
        return self._snapshot

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def relays(self) -> tuple[bool, bool]:
        return self._relays

    @property
    def alarm_status(self) -> AlarmStatus:
        return self.alarms.status()

    def add_listener(self, callback: Listener) -> None:
        self._listeners.append(callback)

    def apply_settings(self, new: Settings) -> Durable | None:
        validate(new)
        if new.model != self._settings.model or new.sample_rate_hz != self._settings.sample_rate_hz:
            raise ValueError("model and sample rate change only with a restart")
        with self._lock:
            old = self._settings
            changes, note = changes_between(old, new), ""
            if self._settings_file is not None:  # refused here if the operator edited the key
                try:
                    note = self._settings_file.submit(old, new)
                except SettingsConflict as exc:
                    self._event("settings_refused", str(exc))
                    raise
            self._engine_settings = new  # the step thread configures its engine between steps
            self._settings = new
            for t in self.alarms.configure(new.alarms):
                self._alarm_event(t)
            self._drive_relays("settings changed")
            self._event("settings", describe(changes) + (f"; {note}" if note else ""))
            self._check_voltage_range(new)
            return self._request_commit()

    def set_relay(self, index: int, closed: bool) -> Durable | None:
        """Manual control; raises RelayModeError when the relay is in alarm mode."""
        with self._lock:
            if self._settings.relays.relays[index].mode == "alarm":
                raise RelayModeError(
                    f"relay {index + 1} is in alarm mode: its rules switch it (set "
                    f"relays.{index + 1}.mode to manual to switch it by hand)")
            self._switch(index, bool(closed), "manual")
            return self._request_commit()

    def reset_energy(self, meter: int | None) -> Durable | None:
        """Zero one Meter (and its CTs) or all; logged, and committed at once."""
        with self._lock:
            if meter is None:
                self.ct_registers.reset()
                self.meter_registers.reset()
            else:
                self.ct_registers.reset(slice(3 * (meter - 1), 3 * meter))
                self.meter_registers.reset(np.array([meter - 1]))
            self._event("energy_reset", "all Meters" if meter is None else f"Meter {meter} "
                        f"(CT{3 * meter - 2}-CT{3 * meter})")
            return self._request_commit()

    def acknowledge_alarms(self, relay: int | None) -> Durable | None:
        """Acknowledge the latched alarms of relay 1 or 2, or of all (None)."""
        with self._lock:
            for t in self.alarms.acknowledge(relay):
                self._alarm_event(t)
            self._drive_relays("alarm acknowledged")
            return self._request_commit()

    def wait_settings_saved(self, timeout_s: float = 10.0) -> bool:
        """Wait until settings changes are in the settings file (they are saved in a thread)."""
        return self._settings_file is None or self._settings_file.flush(timeout_s)

    def close(self) -> None:
        """Save the last state and release the store (at a clean shutdown)."""
        if self._settings_file is not None:
            self._settings_file.close()
        with self._lock:
            self._log_news()
        self._save_now()  # not under the lock: the committer takes it
        if self._committer is not None:
            self._committer.close()
        if self.store is not None:
            self.store.close()

    # -- relays, alarms, events, store -----------------------------------------------------

    def _event(self, kind: str, text: str) -> None:
        event = Event(self.clock(), self.boot, self.seq - 1, kind, text)
        self.events.append(event)
        self._unsaved.append(event)
        log.info("%s: %s", kind, text)

    def _check_voltage_range(self, settings: Settings) -> None:
        """Warn (log, event, Status.VOLTAGE_RANGE) when a nominal voltage leaves the inputs'
        range, and log an event when it is back: such settings are accepted, not refused."""
        warnings = voltage_range_warnings(settings)
        if warnings == self._voltage_warnings:
            return
        for text in warnings:
            log.warning("%s", text)
            self._event("voltage_range", text)
        if not warnings:
            self._event("voltage_range", "every main's nominal voltage is within the inputs' range")
        self._voltage_warnings = warnings

    def clock(self) -> float:
        """The meter's clock, the one snapshots (and so the console and JSON) show: the end
        of the last measured second, advanced at the run's speed between two seconds. With
        `run --speed 50` it runs 50 times faster than the wall clock; in a replay it is the
        recording's time. Events carry it, so the event log and the console agree."""
        if self._last_end_mono is None or not self._speed:
            return self._last_end
        ahead = (time.monotonic() - self._last_end_mono) * self._speed
        return self._last_end + min(max(ahead, 0.0), 1.0)

    def _switch(self, index: int, closed: bool, why: str, always: bool = False) -> None:
        if self._relays[index] == closed and not always:
            return
        relays = list(self._relays)
        relays[index] = closed
        self._relays = (relays[0], relays[1])
        self.driver.set(index, closed)  # a failure is reported by poll(), once per streak
        self._event("relay", f"relay {index + 1} {'closed' if closed else 'open'} ({why})")
        for problem in self.driver.poll_news():
            self._event("relay_driver", problem)

    def _log_news(self) -> None:
        """What the settings writer found since the last second (a failed save, a merge)."""
        for text in self._settings_file.poll_news() if self._settings_file else ():
            self._event("settings_file", text)

    def _drive_relays(self, why: str) -> None:
        """Relays in alarm mode follow their rules."""
        for k, relay in enumerate(self._settings.relays.relays):
            if relay.mode == "alarm":
                self._switch(k, self.alarms.demand(k + 1, relay.combine), why)

    def _alarm_event(self, t: Transition) -> None:
        rule = self._settings.alarms[t.slot - 1] if t.slot <= len(self._settings.alarms) else None
        what = f"alarm {t.slot} ({rule.describe() if rule else 'removed'})"
        value = "" if t.value != t.value else f", value {t.value:.6g}"  # NaN: no value
        self._event(f"alarm_{t.kind}", what + value)

    # -- the loop --------------------------------------------------------------------------

    def _block_length(self, ahead: int = 0) -> int:
        fs, k = self._settings.sample_rate_hz, self.seq + ahead
        return int(round((k + 1) * fs)) - int(round(k * fs))

    def step(self) -> Snapshot | None:
        """Process the next second; None when a finite source is exhausted."""
        measured = self._measure()
        if measured is None:
            return None
        if measured is OFF:  # switched off (a power_cycle fault): nothing measured or published
            self._off_seconds += 1
            return self._snapshot
        snap, done = self._advance(*measured)
        if done is not None:
            done.result()  # False: not saved; the status word says so
        return self._publish(snap)

    def _measure(self) -> tuple[StepResult, int] | object | None:
        """Run the engine over the next second of samples, and count the samples read so far
        (None: the source is exhausted).

        A finite (not real-time) source is read one block ahead, so its last block is known
        to be the last and the engine reports every whole cycle in it.
        """
        with self._lock:
            configure, self._engine_settings = self._engine_settings, None
        if configure is not None:
            self.engine.configure(configure)
            self.pq.configure(configure)
        if self._ahead is not None:
            block, self._ahead = self._ahead, None
        else:
            block = self.source.read(self._block_length())
        if block is None:
            self.finished = True
            return None
        if not self._powered_for(block.start):
            return OFF
        final = False
        if not self.source.realtime:
            self._ahead = self.source.read(self._block_length(1))
            final = self._ahead is None
        result = self.engine.step(block.voltages, block.currents, block.start,
                                  (self.source.full_scale_v, self.source.full_scale_i), final)
        return result, block.start + block.n

    def _advance(self, r: StepResult, end_sample: int) -> tuple[Snapshot, Durable | None]:
        """Add one second to the registers and rules; the snapshot to publish once the
        commit (if this second has one) is done. ``end_sample``: samples read so far; the
        second's time stamp is their duration (a block's own length would drift wherever a
        second is not a whole number of samples, and would stamp a recording's last partial
        block as a whole second)."""
        ct, meter, main = CtValues(**r.ct), MeterValues(**r.meter), MainValues(**r.main)
        self._check_clock()
        end = self.start_time + end_sample / self._settings.sample_rate_hz
        with self._lock:
            self.ct_registers.add(r.ct_energy)
            self.meter_registers.add(r.meter_energy)
            self.seq += 1  # events of this second carry its seq (seq - 1) and its end time
            self._last_end, self._last_end_mono = end, time.monotonic()
            for t in self.alarms.update(ct, meter, main):
                self._alarm_event(t)
            self._drive_relays("alarm")
            for problem in self.driver.poll():
                self._event("relay_driver", problem)
            self._log_news()
            pq_news, pq = self.pq.after_step(r, end)
            for kind, text in pq_news:
                self._event(kind, text)
            due = (self.seq - 1) % self._settings.store.commit_interval_s == 0
            done = self._request_commit() if due or self._not_saved else None
            snap = Snapshot(
                seq=self.seq - 1,
                time=end,
                settings=self._settings,
                ct=ct,
                meter=meter,
                main=main,
                ct_energy=self.ct_registers.energies(),
                meter_energy=self.meter_registers.energies(),
                relays=self._relays,
                duration_s=r.duration_s,
                alarms=self.alarms.status(),
                waveforms=r.waveforms,
                pq=pq,
                status=self.status,
            )
        return snap, done

    def _publish(self, snap: Snapshot) -> Snapshot:
        """Publish one second (after its commit: on disk before anyone sees it)."""
        self._snapshot = snap
        snap = self._snapshot = replace(snap, status=self.status)
        self._show_status()
        for listener in self._listeners:
            try:
                listener(snap)
            except Exception:  # one broken listener must not stop the meter
                log.exception("snapshot listener failed")
        return snap

    async def run(self, speed: float = 1.0, seconds: float | None = None,
                  stop: asyncio.Event | None = None) -> None:
        """Run until the source ends, ``seconds`` have been measured, or ``stop`` is set.

        Real-time sources are paced so second k is published at start + (k+1)/speed; a
        finite (replay) source runs as fast as it can unless a speed is given. Each step runs
        in one worker thread, so the loop keeps serving while the second is measured.
        """
        with ThreadPoolExecutor(1, thread_name_prefix="meter-step") as worker:
            await self._run(worker, speed, seconds, stop)

    async def _run(self, worker: ThreadPoolExecutor, speed: float, seconds: float | None,
                   stop: asyncio.Event | None) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        paced = speed > 0 and (self.source.realtime or speed != 1.0)
        self._speed = speed if paced else 0.0
        while not (stop is not None and stop.is_set()):
            if seconds is not None and self.seq >= seconds:
                return
            if paced:
                due = t0 + (self.seq + self._off_seconds + 1) / speed
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
            if await loop.run_in_executor(worker, self.step) is None:
                return


def _with_rate(settings: Settings, fs: float) -> Settings:
    from dataclasses import replace

    return replace(settings, sample_rate_hz=float(fs))
