"""The power-up snapshot: what the meter serves before its first measured second.

The restored energy counters are known at power-up, so every interface serves them from
the start (never 0 kWh); instantaneous values are NaN with the ``no_data`` quality flag and
the status word has ``Status.NO_DATA`` until the first second is measured. Its ``seq`` is
-1 (the registers ``snapshot_seq`` and ``snapshot_time`` read 0).
"""

from __future__ import annotations

import numpy as np

from pm4324.config.settings import N_CTS, N_METERS, Settings
from pm4324.device.energy import EnergyRegisters
from pm4324.snapshot import AlarmStatus, CtValues, Flag, MainValues, MeterValues, Snapshot

HARMONIC_ORDERS = 51


def _nan(*shape: int) -> np.ndarray:
    return np.full(shape, np.nan)


def _flags(n: int) -> np.ndarray:
    return np.full(n, int(Flag.NO_DATA), dtype=np.int64)


def no_data_snapshot(settings: Settings, ct_energy: EnergyRegisters,
                     meter_energy: EnergyRegisters, relays: tuple[bool, bool],
                     alarms: AlarmStatus, time: float, status: int) -> Snapshot:
    """A snapshot with these energies, NaN values and ``no_data`` flags everywhere."""
    ct = CtValues(**{f: _nan(N_CTS) for f in (
        "v_rms", "i_rms", "p_w", "q_var", "s_va", "pf", "thd_v_pct", "thd_i_pct",
        "frequency_hz")}, v_harmonics=_nan(N_CTS, HARMONIC_ORDERS),
        i_harmonics=_nan(N_CTS, HARMONIC_ORDERS), flags=_flags(N_CTS))
    meter = MeterValues(**{f: _nan(N_METERS) for f in (
        "v_rms", "i_rms", "p_w", "q_var", "s_va", "s_arith_va", "s_vector_va", "pf",
        "frequency_hz")}, flags=_flags(N_METERS))
    n = settings.n_mains
    main = MainValues(frequency_hz=_nan(n), v_ln=_nan(n, 3), v_ll=_nan(n, 3),
                      thd_v_pct=_nan(n, 3), flags=_flags(n))
    return Snapshot(seq=-1, time=time, settings=settings, ct=ct, meter=meter, main=main,
                    ct_energy=ct_energy.energies(), meter_energy=meter_energy.energies(),
                    relays=relays, alarms=alarms, status=status)
