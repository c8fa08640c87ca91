"""Topic layout and payloads: pure functions from one snapshot dict to MQTT messages.

They take the dict of ``Snapshot.to_dict()`` (plus ``alarms_dict()``), the shape every meter
has whether it runs here or is read by ``client/``, so ``run`` and ``hub`` publish alike.
Layout (docs/mqtt.md)::

    <prefix>/<node>/status             online | offline (retained; the last will)
    <prefix>/<node>/device             seq, time, model, relays, status, alarms
    <prefix>/<node>/main/<i>           one main's V, f, THD
    <prefix>/<node>/meter/<m>          one Meter's values and energy registers
    <prefix>/<node>/ct/<k>             one CT's values and energy registers
    <prefix>/<node>/history            buffered minutes sent after an outage (never live)
    <prefix>/<node>/relay/<r>/set      command: ON | OFF   (only with commands = "relays")
    <prefix>/<node>/alarm/ack          command: a relay number, or "all"
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

Message = tuple[str, str]

#: units of the payload keys (documented in docs/mqtt.md); energies are in k-units
UNITS = {
    "v_rms": "V", "i_rms": "A", "p_w": "W", "q_var": "var", "s_va": "VA",
    "s_arith_va": "VA", "s_vector_va": "VA", "pf": "", "thd_v_pct": "%", "thd_i_pct": "%",
    "frequency_hz": "Hz", "v_ln": "V", "v_ll": "V", "kwh_import": "kWh", "kwh_export": "kWh",
    "kvarh_q1": "kvarh", "kvarh_q2": "kvarh", "kvarh_q3": "kvarh", "kvarh_q4": "kvarh",
    "kvah": "kVAh", "time": "s",
}
ENERGY_KEYS = ("kwh_import", "kwh_export", "kvarh_q1", "kvarh_q2", "kvarh_q3", "kvarh_q4", "kvah")


def base(prefix: str, node: str) -> str:
    return f"{prefix}/{node}"


def _stamp(d: dict[str, Any]) -> dict[str, Any]:
    return {"seq": d.get("seq"), "time": d.get("time")}


def _payload(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def state_messages(d: dict[str, Any], root: str) -> Iterator[Message]:
    """The live state topics of one second, device first."""
    device = {**_stamp(d), "model": d.get("model"), "relays": d.get("relays"),
              "status": d.get("status", []), "alarms": d.get("alarms", []),
              "relay_modes": d.get("relay_modes", [])}
    yield f"{root}/device", _payload(device)
    for main in d.get("mains", []):
        yield f"{root}/main/{main['main']}", _payload({**_stamp(d), **main})
    for meter in d.get("meters", []):
        yield f"{root}/meter/{meter['meter']}", _payload({**_stamp(d), **meter})
    for ct in d.get("cts", []):
        yield f"{root}/ct/{ct['ct']}", _payload({**_stamp(d), **ct})


def changed(old: dict[str, Any] | None, new: dict[str, Any], deadband_pct: float) -> bool:
    """Whether a topic's payload moved: any number by more than the dead band (relative to
    the larger magnitude), any other value at all. Energies count every change."""
    if old is None:
        return True
    for key, value in new.items():
        if key in ("seq", "time"):
            continue
        before = old.get(key)
        if isinstance(value, float) and isinstance(before, float) and key not in ENERGY_KEYS:
            scale = max(abs(value), abs(before))
            if scale and abs(value - before) > scale * deadband_pct / 100:
                return True
        elif value != before:
            return True
    return False


# -- store and forward -------------------------------------------------------------------------

#: what a buffered minute keeps of each element (the rest is in the history store, if any)
BUFFERED = ("i_rms", "p_w", "q_var", "s_va", "pf", "frequency_hz", *ENERGY_KEYS)


def minute_reading(d: dict[str, Any]) -> dict[str, Any]:
    """The compact reading kept on disk while the broker is away."""
    def keep(e: dict[str, Any], key: str) -> dict[str, Any]:
        return {key: e[key], **{k: e[k] for k in BUFFERED if k in e}}

    return {
        **_stamp(d),
        "mains": [{"main": m["main"], "v_ln": m["v_ln"], "frequency_hz": m["frequency_hz"]}
                  for m in d.get("mains", [])],
        "meters": [keep(m, "meter") for m in d.get("meters", [])],
        "cts": [keep(c, "ct") for c in d.get("cts", [])],
    }


def history_message(reading: dict[str, Any], root: str) -> Message:
    """One buffered minute as one message on ``<root>/history``, with its original time:
    one message a minute keeps a long backlog quick to send and easy to put back together."""
    return f"{root}/history", _payload(reading)
