"""The physics fidelity level: every member simulated as waveforms and measured by the real
engine, in worker processes (past the GIL), at the fleet's sample rate (docs/fleet.md).

Each worker owns a contiguous share of the members: per member a ``SimulatorSource`` and an
``Engine`` at ``[fleet] sample_rate_hz`` (3.2 kS/s by default: a quarter of the meter's 12.8
kS/s, orders up to 31 at 50 Hz). The workers run one second ahead: when the clock takes
second k it asks for k + 1, and each worker synthesises and measures one second of each of
its members and sends back
one row of numbers per member (the snapshot's values, the engine's flags and the second's
energy increments, ``FIELDS``); the clock then commits and publishes exactly as at the truth
level (fleet/clock.py). A CT ratio written to a member reaches its engine before its next
second, as in a single meter. Harmonic spectra are not shipped back (NaN in snapshots).
The members of a worker share one table of Gaussian ADC noise (2 MB a member otherwise),
each reading it at offsets drawn from its own seeded generator, and one set of the
synthesis's scratch arrays (0.75 MB a member otherwise).
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from dataclasses import replace
from multiprocessing.connection import Connection

import numpy as np

from pm4324.config.settings import N_CTS, N_METERS, Settings
from pm4324.fleet.clock import TruthFleet
from pm4324.fleet.config import FleetConfig
from pm4324.fleet.store import FleetStore
from pm4324.fleet.truth import Second
from pm4324.sources.scenario import Scenario

CT_KEYS = ("v_rms", "i_rms", "p_w", "q_var", "s_va", "pf", "thd_v_pct", "thd_i_pct",
           "frequency_hz")
METER_KEYS = ("v_rms", "i_rms", "p_w", "q_var", "s_va", "s_arith_va", "s_vector_va", "pf",
              "frequency_hz")
MAINS = 2  # rows are laid out for two mains (a PM-4324's second is NaN)
# (name, shape) of one member's row, in order
FIELDS = ([(f"ct.{k}", (N_CTS,)) for k in CT_KEYS] + [("ct.flags", (N_CTS,))]
          + [(f"meter.{k}", (N_METERS,)) for k in METER_KEYS] + [("meter.flags", (N_METERS,))]
          + [("main.frequency_hz", (MAINS,)), ("main.v_ln", (MAINS, 3)),
             ("main.v_ll", (MAINS, 3)), ("main.thd_v_pct", (MAINS, 3)), ("main.flags", (MAINS,)),
             ("ct_energy", (N_CTS, 7)), ("meter_energy", (N_METERS, 7))])
_SLICES = {}
_at = 0
for _name, _shape in FIELDS:
    _size = int(np.prod(_shape))
    _SLICES[_name] = (slice(_at, _at + _size), _shape)
    _at += _size
WIDTH = _at


def _pack(r, out: np.ndarray) -> None:
    """One StepResult into one row."""
    out[:] = np.nan
    for k in CT_KEYS:
        out[_SLICES[f"ct.{k}"][0]] = r.ct[k]
    out[_SLICES["ct.flags"][0]] = r.ct["flags"]
    for k in METER_KEYS:
        out[_SLICES[f"meter.{k}"][0]] = r.meter[k]
    out[_SLICES["meter.flags"][0]] = r.meter["flags"]
    for k in ("frequency_hz", "v_ln", "v_ll", "thd_v_pct", "flags"):
        x = np.asarray(r.main[k], dtype=float)
        sl, shape = _SLICES[f"main.{k}"]
        padded = np.full(shape, np.nan)
        padded[: len(x)] = x
        out[sl] = padded.ravel()
    out[_SLICES["ct_energy"][0]] = np.asarray(r.ct_energy).ravel()
    out[_SLICES["meter_energy"][0]] = np.asarray(r.meter_energy).ravel()


def _field(rows: np.ndarray, name: str) -> np.ndarray:
    sl, shape = _SLICES[name]
    return rows[:, sl].reshape(len(rows), *shape)


def unpack(k: int, rows: np.ndarray, n_mains: int) -> Second:
    """Rows of members (one group) -> a per-member ``Second``."""
    ct = {key: _field(rows, f"ct.{key}") for key in CT_KEYS}
    meter = {key: _field(rows, f"meter.{key}") for key in METER_KEYS}
    main = {key: _field(rows, f"main.{key}")[:, :n_mains]
            for key in ("frequency_hz", "v_ln", "v_ll", "thd_v_pct")}
    main["flags"] = _field(rows, "main.flags")[:, :n_mains].astype(np.int64)
    return Second(k, ct, meter, main, _field(rows, "ct_energy"), _field(rows, "meter_energy"),
                  ct_flags=_field(rows, "ct.flags").astype(np.int64),
                  meter_flags=_field(rows, "meter.flags").astype(np.int64))


class FastPhasors:
    """A member's scenario for its simulator, with the phasors of a second without faults
    or sags computed as one product (each load's level times its precomputed current
    phasors) instead of Python loops over loads, CTs and orders: 0.27 ms of the ~1.2 ms a
    meter-second costs at 3.2 kS/s (measured with cProfile). Anything else is the
    scenario's own (the slow path is exact by construction)."""

    def __init__(self, scenario: Scenario, settings: Settings):
        from pm4324.sources.truth import load_currents

        self._scenario = scenario
        volts, _, orders = scenario.phasors(settings, 0.0, (), sags=False)
        self._volts, self._orders = volts, orders
        self._lc = load_currents(scenario, orders).reshape(len(scenario.loads), -1)

    def __getattr__(self, name: str):
        return getattr(self._scenario, name)

    def phasors(self, settings: Settings, t: float, faults=None, sags: bool = True):
        active = [f for f in (self._scenario.faults if faults is None else faults)
                  if f.active(t)]
        if active or sags:
            return self._scenario.phasors(settings, t, faults, sags)
        levels = np.array([ld.level(t) for ld in self._scenario.loads])
        currents = (levels @ self._lc).reshape(N_CTS, len(self._orders))
        return self._volts.copy(), currents, list(self._orders)


def _worker(conn: Connection, members: list[tuple[Settings, Scenario]], rate: float) -> None:
    """A worker process: simulate and measure its members, one second per request."""
    from threadpoolctl import threadpool_limits

    from pm4324.metering.engine import Engine
    from pm4324.sources.simulator import SimulatorSource

    threadpool_limits(limits=1, user_api="blas")
    sources, engines = [], []
    noise = None
    for settings, scenario in members:
        s = replace(settings, sample_rate_hz=rate)
        src = SimulatorSource(scenario, s)
        src.scenario = FastPhasors(scenario, s)  # type: ignore[assignment]
        # one Gaussian table per worker (2 MB each otherwise); each member still reads it at
        # offsets from its own seeded generator
        if noise is None:
            noise = src.noise
        elif src.noise is not None and noise is not None:
            src.noise = noise
        # the synthesis's scratch arrays (0.75 MB a member at 3.2 kS/s) are used one member
        # at a time: one set per worker (a member whose shape differs makes its own)
        fast = src.scenario
        n = int(round(rate))
        if sources:
            src._work_shape, src._work_arrays = sources[0]._work_shape, sources[0]._work_arrays
        else:
            src._work(n, len(fast._orders))
        sources.append(src)
        engines.append(Engine(s))
    out = np.empty((len(members), WIDTH))
    if members:  # the first second of an engine costs ~1 s (allocations, dispatch): not here
        settings, scenario = members[0]
        s = replace(settings, sample_rate_hz=rate)
        warm_src, warm = SimulatorSource(scenario, s), Engine(s)
        n = int(round(rate))
        for _ in range(2):
            block = warm_src.read(n)
            warm.step(block.voltages, block.currents, block.start,
                      (warm_src.full_scale_v, warm_src.full_scale_i), False)
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            break
        if msg[0] == "settings":
            _, j, settings = msg
            engines[j].configure(replace(settings, sample_rate_hz=rate))
            continue
        if msg[0] == "faults":  # the member's faults as the fleet's book has them now
            _, j, faults = msg
            sources[j].faults.faults = faults
            continue
        k = msg[1]
        n = int(round((k + 1) * rate)) - int(round(k * rate))
        for j, (src, eng) in enumerate(zip(sources, engines)):
            block = src.read(n)
            r = eng.step(block.voltages, block.currents, block.start,
                         (src.full_scale_v, src.full_scale_i), False)
            _pack(r, out[j])
        conn.send(out)
    conn.close()


class PhysicsFleet(TruthFleet):
    """Members measured by the real engine in ``config.workers`` processes."""

    def __init__(self, config: FleetConfig, store: FleetStore):
        super().__init__(config, store)
        n = len(config.members)
        workers = max(1, min(config.workers, n))
        bounds = np.linspace(0, n, workers + 1).astype(int)
        self._shares = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        ctx = mp.get_context("spawn")  # no fork of a process with threads
        self._conns: list[Connection] = []
        self._procs = []
        for a, b in self._shares:
            parent, child = ctx.Pipe()
            specs = [(m.settings, m.scenario) for m in config.members[a:b]]
            proc = ctx.Process(target=_worker, args=(child, specs, config.sample_rate_hz),
                               name=f"fleet-physics-{a}", daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        for conn in self._conns:
            if conn.recv() != "ready":
                raise RuntimeError("a physics worker did not start")
        self._rows = np.empty((n, WIDTH))
        # the clock and the writers (Modbus, live faults) send; a change reaches a worker
        # after every step already sent, so it acts from second _sent + 1: the fault book
        # stamps it so, under the same lock
        self._send_lock = threading.RLock()
        self._sent = -1  # the newest second asked of the workers
        self._received = -1
        self.faults.lock = self._send_lock
        self.faults.on_change = self._send_faults
        for book in self.faults.books:
            book.now = lambda: float(self._sent + 1)

    def _ask(self, k: int) -> None:
        with self._send_lock:
            for conn in self._conns:
                conn.send(("step", k))
            self._sent = k

    def _send_faults(self, member: int, faults: tuple) -> None:
        """A live fault set or cleared: the member's simulator gets the book's faults before
        its next second (both books count scenario seconds from the same sample)."""
        for (a, b), conn in zip(self._shares, self._conns):
            if a <= member < b:
                with self._send_lock:
                    conn.send(("faults", member - a, faults))

    def _compute(self, k: int) -> list[Second]:
        """Second k (asked a second ahead: the workers compute k + 1 while k is committed
        and published, so they have a whole second for each)."""
        if self._sent < k:
            self._ask(k)
        for (a, b), conn in zip(self._shares, self._conns):
            self._rows[a:b] = conn.recv()
        self._received = k
        self._ask(k + 1)
        return [unpack(k, self._rows[g.rows].copy(), g.truth.settings.n_mains)
                for g in self.groups]  # faults: applied by each member's simulator

    def set_gain(self, member: int, gain: np.ndarray, rated: np.ndarray) -> None:
        """A live CT ratio write: the member's engine gets its settings before its next
        second (the simulated CTs stay as installed, as for a single meter)."""
        for (a, b), conn in zip(self._shares, self._conns):
            if a <= member < b:
                with self._send_lock:
                    conn.send(("settings", member - a, self.members[member].settings))

    def close(self) -> None:
        for conn in self._conns:
            try:
                if self._sent > self._received and conn.poll(30):
                    conn.recv()  # the second asked ahead: a worker blocks until it is read
                conn.send(("stop",))
            except OSError:
                pass
        for proc in self._procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        super().close()
