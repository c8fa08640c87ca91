"""A remote meter's reading (the keys of ``Snapshot.to_dict()``, as ``client.modbus`` and
``client.canopen`` decode them) back into a ``Snapshot``, so the history, the web and MQTT
services treat a meter read over the wire exactly like the local one.

What the wire does not carry stays empty: values a real unit lacks are NaN, harmonics are
zero, and the settings hold only what was read (model, wiring) plus the names given by the
caller (a hub's configuration), since labels live in settings files, not in registers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from pm4324.config.settings import N_CTS, N_METERS, MeterSettings, Settings, Wiring
from pm4324.snapshot import (
    ENERGY_KINDS,
    CtValues,
    Energies,
    Flag,
    MainValues,
    MeterValues,
    Snapshot,
    Status,
)

_CT = ("v_rms", "i_rms", "p_w", "q_var", "s_va", "pf", "thd_v_pct", "thd_i_pct", "frequency_hz")
_METER = ("v_rms", "i_rms", "p_w", "q_var", "s_va", "s_arith_va", "s_vector_va", "pf",
          "frequency_hz")


def _f(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _flags(names: list[str] | None) -> int:
    return sum(int(Flag[n.upper()]) for n in names or () if n.upper() in Flag.__members__)


def _settings(d: dict[str, Any], names: dict | None) -> Settings:
    model = d.get("model") or "PM-4324A"
    names = names or {}
    meters = []
    by_number = {m["meter"]: m for m in d.get("meters", [])}
    for m in range(1, N_METERS + 1):
        item = by_number.get(m, {})
        wiring = Wiring(item["wiring"]) if item.get("wiring") else Wiring.W3P4W_3CT
        cts = tuple(names.get("cts", {}).get(str(3 * (m - 1) + j), "") for j in (1, 2, 3))
        meters.append(MeterSettings(wiring=wiring, name=names.get("meters", {}).get(str(m), ""),
                                    ct_names=cts))
    base = Settings()
    mains = base.mains[: 1 if model == "PM-4324" else 2]
    return replace(base, model=model, meters=tuple(meters), mains=mains,
                   source_path="<remote meter>")


def _elements(items: list[dict], key: str, count: int, quantities: tuple[str, ...]
              ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Values, flags and energies (Wh, ENERGY_KINDS rows) of the CTs or Meters of a reading,
    numbered by ``item[key]``; NaN (no flags) where the reading has none."""
    values = {q: np.full(count, np.nan) for q in quantities}
    flags = np.zeros(count, dtype=int)
    energy = np.full((len(ENERGY_KINDS), count), np.nan)
    for item in items:
        i = item[key] - 1
        for q in quantities:
            values[q][i] = _f(item.get(q))
        flags[i] = _flags(item.get("flags"))
        energy[:, i] = [_f(item.get("k" + k)) * 1000.0 for k in ENERGY_KINDS]
    return values, flags, energy


def snapshot_from_dict(d: dict[str, Any], names: dict | None = None) -> Snapshot:
    """The Snapshot of a remote reading; ``names`` as ``history.names_of`` gives them."""
    settings = _settings(d, names)
    ct, ct_flags, ct_energy = _elements(d.get("cts", []), "ct", N_CTS, _CT)
    mt, mt_flags, mt_energy = _elements(d.get("meters", []), "meter", N_METERS, _METER)
    n = settings.n_mains
    main = {k: np.full((n, 3), np.nan) for k in ("v_ln", "v_ll", "thd_v_pct")}
    freq, main_flags = np.full(n, np.nan), np.zeros(n, dtype=int)
    for item in d.get("mains", [])[:n]:
        i = item["main"] - 1
        freq[i] = _f(item.get("frequency_hz"))
        main_flags[i] = _flags(item.get("flags"))
        for k in main:
            main[k][i] = [_f(x) for x in (item.get(k) or [None] * 3)]
    relays = tuple(bool(r) for r in (d.get("relays") or [False, False])[:2])
    status = sum(int(Status[s.upper()]) for s in d.get("status") or ()
                 if s.upper() in Status.__members__)
    return Snapshot(
        seq=int(d.get("seq") or 0), time=_f(d.get("time")), settings=settings,
        ct=CtValues(**ct, v_harmonics=np.zeros((N_CTS, 51)), i_harmonics=np.zeros((N_CTS, 51)),
                    flags=ct_flags),
        meter=MeterValues(**mt, flags=mt_flags),
        main=MainValues(frequency_hz=freq, **main, flags=main_flags),
        ct_energy=Energies(*ct_energy), meter_energy=Energies(*mt_energy),
        relays=(relays + (False, False))[:2], duration_s=_f(d.get("duration_s") or 0.0),
        status=status)
