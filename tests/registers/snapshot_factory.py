"""Test helpers for the register map: a snapshot of distinct known values and a fake meter.

Every value in ``make_snapshot`` differs from every other (field, element and second all
enter it), so a register served from the wrong field, CT, Meter or second is detectable.
tests/cli/test_read_cmd.py and tests/protocols/modbus/test_modbus_multi.py reuse it (it is on
pytest's pythonpath), and ``assert_same`` to compare what a client read with ``to_dict()``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from pm4324.config.settings import N_CTS, N_METERS, Settings, validate
from pm4324.device.relays import RelayModeError
from pm4324.snapshot import (
    ENERGY_KINDS,
    AlarmStatus,
    CtValues,
    Energies,
    Flag,
    MainValues,
    MeterValues,
    Snapshot,
)


def _sign(n: int, period: int = 1) -> np.ndarray:
    """+1/-1 pattern; P with period 1 and Q with period 2 give all four quadrants."""
    return np.where((np.arange(n) // period) % 2 == 0, 1.0, -1.0)


def make_snapshot(settings: Settings | None = None, seq: int = 7) -> Snapshot:
    s = settings or Settings()
    k = np.arange(1, N_CTS + 1, dtype=float)
    m = np.arange(1, N_METERS + 1, dtype=float)
    n = s.n_mains
    t = seq * 0.001  # moves every value a little with the second
    ct_q = 400.0 * k * _sign(N_CTS, 2) + t
    ct_q[4] = 0.0  # CT5: neither lead nor lag
    ct = CtValues(
        v_rms=200.0 + k + t,
        i_rms=1.5 * k + t,
        p_w=1000.0 * k * _sign(N_CTS) + t,
        q_var=ct_q,
        s_va=1100.0 * k + t,
        pf=0.5 + k / 100 + t,
        thd_v_pct=1.0 + k / 10 + t,
        thd_i_pct=np.where(k == 6, np.nan, 10.0 + k / 10 + t),  # CT6: no data
        frequency_hz=49.0 + k / 100 + t,
        v_harmonics=np.zeros((N_CTS, 51)),
        i_harmonics=np.zeros((N_CTS, 51)),
        flags=np.array([int(Flag.UNUSED) if i == 3 else i % 7 for i in range(N_CTS)]),
    )
    meter = MeterValues(
        v_rms=300.0 + m + t,
        i_rms=2.5 * m + t,
        p_w=-3000.0 * m * _sign(N_METERS) + t,
        q_var=700.0 * m + t,
        s_va=3300.0 * m + t,
        s_arith_va=3400.0 * m + t,
        s_vector_va=3200.0 * m + t,
        pf=-0.25 - m / 100 + t,
        frequency_hz=50.0 + m / 100 + t,
        flags=m.astype(int) * 2,
    )
    j = np.arange(1, 4, dtype=float)
    main_i = np.arange(1, n + 1, dtype=float)[:, None]
    main = MainValues(
        frequency_hz=np.arange(1, n + 1) * 0.5 + 49.5 + t,
        v_ln=220.0 + 10 * main_i + j + t,
        v_ll=380.0 + 10 * main_i + j + t,
        thd_v_pct=2.0 + main_i + j / 10 + t,
        flags=np.arange(1, n + 1) * 4,
    )
    return Snapshot(
        seq=seq,
        time=1_700_000_000.0 + seq,
        settings=s,
        ct=ct,
        meter=meter,
        main=main,
        ct_energy=_energies(N_CTS, 1_000_000.0, seq),
        meter_energy=_energies(N_METERS, 50_000_000.0, seq),
        relays=(False, True),
        duration_s=0.98 + t,
    )


def _energies(count: int, scale: float, seq: int) -> Energies:
    i = np.arange(1, count + 1, dtype=float)
    return Energies(**{
        kind: scale * i + 1234.5 * (n + 1) + seq for n, kind in enumerate(ENERGY_KINDS)
    })


class FakeMeter:
    """A ``MeterControl`` that records what the backend asked of it."""

    def __init__(self, settings: Settings | None = None, snapshot: Snapshot | None = None):
        self.settings = settings or Settings()
        self.snapshot = snapshot
        self.relays = snapshot.relays if snapshot else (False, False)
        self.listeners: list[Callable[[Snapshot], None]] = []
        self.applied: list[Settings] = []
        self.resets: list[int | None] = []
        self.acks: list[int | None] = []
        self.alarm_status = AlarmStatus()

    def apply_settings(self, new: Settings) -> None:
        validate(new)
        self.settings = new
        self.applied.append(new)

    def set_relay(self, index: int, closed: bool) -> None:
        if self.settings.relays.relays[index].mode == "alarm":
            raise RelayModeError(f"relay {index + 1} is in alarm mode")
        relays = list(self.relays)
        relays[index] = closed
        self.relays = (relays[0], relays[1])

    def reset_energy(self, meter: int | None) -> None:
        self.resets.append(meter)

    def acknowledge_alarms(self, relay: int | None) -> None:
        self.acks.append(relay)

    def add_listener(self, callback: Callable[[Snapshot], None]) -> None:
        self.listeners.append(callback)

    def publish(self, snapshot: Snapshot) -> None:
        """What the device loop does once per second."""
        self.snapshot = snapshot
        for callback in self.listeners:
            callback(snapshot)


def backend_reader(backend):
    """A `pm4324 read` Reader over a RegisterBackend in-process: refused reads give None."""
    from pm4324.registers.backend import AccessError

    def read(table, address, count):
        try:
            if table in ("coil", "discrete"):
                return backend.read_bits(table, address, count)
            return backend.read_registers(table, address, count)
        except AccessError:
            return None

    return read


ENERGY_KEYS = {"kwh_import", "kwh_export", "kvarh_q1", "kvarh_q2", "kvarh_q3", "kvarh_q4", "kvah"}


def assert_same(got, want, path: str = "d", key: str = "") -> None:
    """A reading read over the wire equals ``Snapshot.to_dict()`` up to float32 (7 digits)
    and the 0.01 kWh of the integer energy registers."""
    if isinstance(want, dict):
        assert got.keys() == want.keys(), path
        for k in want:
            assert_same(got[k], want[k], f"{path}.{k}", k)
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{path}[{i}]", key)
    elif isinstance(want, float):
        tol = {"abs": 0.0051} if key in ENERGY_KEYS else {"rel": 1e-6}
        assert got == pytest.approx(want, **tol), path
    else:
        assert got == want, path
