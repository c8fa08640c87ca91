"""Home Assistant MQTT discovery: one HA device per meter, one entity per published value.

Per-entity discovery (``<discovery>/<component>/<node>/<object>/config``, retained) rather
than HA's newer per-device form: every HA release since 2021 and openHAB read it. Device
classes, units and state classes are the combinations HA accepts (host-side-notes.md §1):
energy ``total_increasing`` in kWh (the counters never dip: they are the meter's own
registers, restored at start), power W, reactive power var, apparent power VA, and so on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pm4324.mqtt.topics import Message

# (key in the payload, entity suffix, label, device_class, unit, state_class)
Quantity = tuple[str, str, str, str | None, str | None, str]
ELEMENT_QUANTITIES: tuple[Quantity, ...] = (
    ("p_w", "p", "power", "power", "W", "measurement"),
    ("q_var", "q", "reactive power", "reactive_power", "var", "measurement"),
    ("s_va", "s", "apparent power", "apparent_power", "VA", "measurement"),
    ("i_rms", "i", "current", "current", "A", "measurement"),
    ("pf", "pf", "power factor", "power_factor", None, "measurement"),
    ("kwh_import", "energy_import", "energy import", "energy", "kWh", "total_increasing"),
    ("kwh_export", "energy_export", "energy export", "energy", "kWh", "total_increasing"),
)
METER_EXTRA: tuple[Quantity, ...] = (
    ("frequency_hz", "f", "frequency", "frequency", "Hz", "measurement"),
)


def _name(element: dict[str, Any], fallback: str) -> str:
    label = element.get("name")
    return f"{fallback} {label}" if label else fallback


class Discovery:
    """Builds the retained config messages for one meter."""

    def __init__(self, *, discovery_prefix: str, root: str, node: str, meter_id: str,
                 model: str, sw_version: str, commands: bool):
        self.prefix, self.root, self.node, self.commands = discovery_prefix, root, node, commands
        self.device = {"identifiers": [f"pm4324_{meter_id}"], "name": f"{model} {node}",
                       "manufacturer": "pm4324 (software ICP DAS PM-4324)", "model": model,
                       "sw_version": sw_version, "serial_number": meter_id}
        self.origin = {"name": "pm4324", "sw_version": sw_version}

    def _config(self, component: str, object_id: str, name: str, **fields: Any) -> Message:
        body = {"name": name, "unique_id": f"{self.node}_{object_id}",
                "availability_topic": f"{self.root}/status", "device": self.device,
                "origin": self.origin, **{k: v for k, v in fields.items() if v is not None}}
        topic = f"{self.prefix}/{component}/{self.node}/{object_id}/config"
        return topic, json.dumps(body, separators=(",", ":"))

    def _sensor(self, object_id: str, name: str, topic: str, template: str, q: Quantity) -> Message:
        _, _, _, device_class, unit, state_class = q
        return self._config("sensor", object_id, name, state_topic=topic,
                            value_template=template, device_class=device_class,
                            unit_of_measurement=unit, state_class=state_class)

    def messages(self, d: dict[str, Any]) -> Iterator[Message]:
        """Every entity's config for a meter whose snapshot dict is ``d``."""
        for main in d.get("mains", []):
            i = main["main"]
            topic = f"{self.root}/main/{i}"
            for j, phase in enumerate("abc"):
                yield self._sensor(f"main{i}_v_{phase}", f"Main {i} voltage {phase}-N", topic,
                                   f"{{{{ value_json.v_ln[{j}] }}}}",
                                   ("", "", "", "voltage", "V", "measurement"))
            yield self._sensor(f"main{i}_f", f"Main {i} frequency", topic,
                               "{{ value_json.frequency_hz }}", METER_EXTRA[0])
        for kind, key, extra in (("meter", "meter", METER_EXTRA), ("ct", "ct", ())):
            for e in d.get(kind + "s", []):
                n = e[key]
                topic = f"{self.root}/{kind}/{n}"
                label = _name(e, f"{'Meter' if kind == 'meter' else 'CT'} {n}")
                for q in (*ELEMENT_QUANTITIES, *extra):
                    yield self._sensor(f"{kind}{n}_{q[1]}", f"{label} {q[2]}", topic,
                                       f"{{{{ value_json.{q[0]} }}}}", q)
        yield from self._device_entities(d)

    def _device_entities(self, d: dict[str, Any]) -> Iterator[Message]:
        device_topic = f"{self.root}/device"
        for r in (1, 2):
            template = f"{{{{ 'ON' if value_json.relays[{r - 1}] else 'OFF' }}}}"
            if self.commands:
                yield self._config("switch", f"relay{r}", f"Relay {r}", state_topic=device_topic,
                                   value_template=template,
                                   command_topic=f"{self.root}/relay/{r}/set",
                                   payload_on="ON", payload_off="OFF", state_on="ON",
                                   state_off="OFF")
            else:
                yield self._config("binary_sensor", f"relay{r}", f"Relay {r}",
                                   state_topic=device_topic, value_template=template,
                                   payload_on="ON", payload_off="OFF")
        for alarm in d.get("alarms", []):
            k = alarm["alarm"]
            template = ("{% set a = value_json.alarms | selectattr('alarm', 'eq', " + str(k)
                        + ") | list %}{{ 'ON' if a and a[0].active else 'OFF' }}")
            yield self._config("binary_sensor", f"alarm{k}", f"Alarm {k} ({alarm['rule']})",
                               state_topic=device_topic, value_template=template,
                               device_class="problem", payload_on="ON", payload_off="OFF")
        yield self._config("binary_sensor", "not_saved", "Energy not saved",
                           state_topic=device_topic, device_class="problem",
                           value_template="{{ 'ON' if 'not_saved' in value_json.status else 'OFF' }}",
                           payload_on="ON", payload_off="OFF", entity_category="diagnostic")
