"""Per-CT settings, ``[cts.N]``: how a CT is wired and what its circuit is expected to do.

``reverse = true`` inverts the CT's current in the meter (a CT clamped the wrong way round,
fixed without re-wiring); ``phase = "a|b|c"`` names the phase voltage the CT's current is
measured against (its entry of the Meter's ``circuit_phases``, which it overrides; for
wirings 3P4W-3CT and 1P2W-1CT). ``direction`` (import, export or both) and the expected PF
range (``pf_lagging_min``, ``pf_leading_min``: default 0.7 lagging ... 0.95 leading) are what
`pm4324 check-wiring` compares the readings with (docs/wiring-check.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

DIRECTIONS = ("import", "export", "both")
PHASE_WIRINGS = ("3P4W-3CT", "1P2W-1CT")  # wirings whose CTs may name their phase


@dataclass(frozen=True)
class CtSettings:
    """What the wiring check expects of one CT's circuit."""

    direction: str = "import"
    pf_lagging_min: float = 0.7  # lowest PF while the current lags (inductive)
    pf_leading_min: float = 0.95  # lowest PF while the current leads (capacitive)


def read_cts(tables: dict[int, Any], meters: tuple) -> tuple[tuple[CtSettings, ...], tuple]:
    """``[cts.N]`` readers (settings_parse._Reader, keyed by CT number) -> the 24 ``CtSettings``
    and the Meters with each CT's ``reverse`` and ``phase`` applied."""
    n_cts = 3 * len(meters)
    cts = [CtSettings()] * n_cts
    meters = list(meters)
    for k, r in sorted(tables.items()):
        m, pos = (k - 1) // 3, (k - 1) % 3
        meter = meters[m]
        reverse = r.flag("reverse", meter.ct_reverse[pos])
        phase = r.choice("phase", meter.circuit_phases[pos], ("a", "b", "c"))
        if "phase" in r.table and meter.wiring.value not in PHASE_WIRINGS and phase != "abc"[pos]:
            raise r.error("phase", phase, "applies only to wirings " + " and ".join(PHASE_WIRINGS))
        cts[k - 1] = CtSettings(
            direction=r.choice("direction", "import", DIRECTIONS),
            pf_lagging_min=r.number("pf_lagging_min", 0.7, 0.0, 1.0),
            pf_leading_min=r.number("pf_leading_min", 0.95, 0.0, 1.0))
        r.finish()
        flags, phases = list(meter.ct_reverse), list(meter.circuit_phases)
        flags[pos], phases[pos] = reverse, phase
        meters[m] = replace(meter, ct_reverse=tuple(flags), circuit_phases=tuple(phases))
    return tuple(cts), tuple(meters)


def cts_table(cts: tuple[CtSettings, ...], meters: tuple) -> dict[str, Any]:
    """The ``[cts]`` TOML table: CTs with a reverse flag or expectations other than the
    defaults (their phase is written in the Meter's ``circuit_phases``)."""
    out: dict[str, Any] = {}
    for k, ct in enumerate(cts, 1):
        row: dict[str, Any] = {}
        if meters[(k - 1) // 3].ct_reverse[(k - 1) % 3]:
            row["reverse"] = True
        if ct != CtSettings():
            row.update(direction=ct.direction, pf_lagging_min=ct.pf_lagging_min,
                       pf_leading_min=ct.pf_leading_min)
        if row:
            out[str(k)] = row
    return out
