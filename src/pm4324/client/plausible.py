"""Values no meter can read: how `pm4324 read` notices a wrong 32-bit word order.

Decoded in the wrong word order, a 32-bit value keeps its two halves but swaps them: a
clock of 2026 reads as 2092, 50 Hz as 3.6e-38 Hz, 230 V as 3.4e-24 V. The snapshot's
counter and clock and the mains' frequency and voltages are known quantities, so such
values are detected rather than printed.
"""

from __future__ import annotations

import time
from typing import Any


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + " UTC"


def implausible(d: dict[str, Any]) -> list[str]:
    """What no meter can read, e.g. a clock years ahead, V = -2.5e30, 1e-41 Hz: the marks of
    32-bit values decoded in the wrong word order (at most three, for one line)."""
    wrong = []
    t = d.get("time")
    if t is not None and not -1 <= t <= time.time() + 366 * 86400:
        wrong.append(f"second {d.get('seq')} at {_when(t)}")
    for m in d.get("mains") or []:
        f = m.get("frequency_hz")
        if f is not None and not (f == 0 or 1 <= f <= 1000):
            wrong.append(f"main {m['main']} frequency {f:.3g} Hz")
        for v in (m.get("v_ln") or []) + (m.get("v_ll") or []):
            if v is not None and not (v == 0 or 1e-6 <= v <= 1e7):
                wrong.append(f"main {m['main']} voltage {v:.3g} V")
                break
    for c in d.get("cts") or []:
        i = c.get("i_rms")
        if i is not None and not (i == 0 or 1e-12 <= i <= 1e7):
            wrong.append(f"CT{c['ct']} current {i:.3g} A")
            break
    return wrong[:3]


def summary(d: dict[str, Any]) -> str:
    """The known quantities as the other word order gives them, for the user to compare."""
    parts = []
    if d.get("time") is not None:
        parts.append(f"second {d.get('seq')} at {_when(d['time'])}")
    for m in (d.get("mains") or [])[:1]:
        if m.get("frequency_hz") is not None:
            parts.append(f"main {m['main']} {m['frequency_hz']:.3f} Hz")
    return ", ".join(parts) or "plausible values"
