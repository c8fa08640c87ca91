"""Which registers an integration file polls, and what each one is, from the register table.

One list for every generated file (Home Assistant, Telegraf, Node-RED, evcc, the JSON map):
per main its phase voltages and frequency, per Meter and per used CT its V, I, P, Q, S, PF
and import/export energy (float registers, so no resolution is lost). A CT its Meter's wiring
does not use is left out, and so is main 2 on a PM-4324.
"""

from __future__ import annotations

from dataclasses import dataclass

from pm4324.config.settings import CTS_PER_METER, N_METERS, Settings
from pm4324.registers.table import Point, RegisterMap, load_map

# register name suffix -> (key in the snapshot dict, Home Assistant class, state class, label)
ELEMENT = (
    ("v", "v_rms", "voltage", "measurement", "voltage"),
    ("i", "i_rms", "current", "measurement", "current"),
    ("kw", "p_w", "power", "measurement", "power"),
    ("kvar", "q_var", "reactive_power", "measurement", "reactive power"),
    ("kva", "s_va", "apparent_power", "measurement", "apparent power"),
    ("pf", "pf", "power_factor", "measurement", "power factor"),
    ("kwh_import_f32", "kwh_import", "energy", "total_increasing", "energy import"),
    ("kwh_export_f32", "kwh_export", "energy", "total_increasing", "energy export"),
)
METER_EXTRA = (("hz", "frequency_hz", "frequency", "measurement", "frequency"),)
MAIN = (
    ("v_an", "v_ln", 0, "voltage", "voltage a-N"),
    ("v_bn", "v_ln", 1, "voltage", "voltage b-N"),
    ("v_cn", "v_ln", 2, "voltage", "voltage c-N"),
    ("hz", "frequency_hz", None, "frequency", "frequency"),
)
#: the register's unit, as integrations spell it
UNITS = {"PF": "", "kW": "kW", "kvar": "kvar", "kVA": "kVA"}


@dataclass(frozen=True)
class Exported:
    """One polled register: where it is, what it means, and where ``--json`` has it."""

    point: Point
    key: str  # unique, e.g. "ct5_kw"
    label: str  # "CT 5 power" or "CT 5 (Shop 3 - lighting) power"
    group: str  # "cts", "meters" or "mains" in the snapshot dict
    number: int  # CT, Meter or main number
    json_key: str  # the key in that element's dict
    json_index: int | None  # for per-phase lists (v_ln)
    device_class: str
    state_class: str

    @property
    def unit(self) -> str:
        return UNITS.get(self.point.unit, self.point.unit)

    @property
    def json_scale(self) -> float:
        """Register value = ``--json`` value x this (power in kW against W, and so on)."""
        return 1e-3 if self.point.unit in ("kW", "kvar", "kVA") else 1.0


def _label(kind: str, number: int, name: str) -> str:
    return f"{kind} {number}" + (f" ({name})" if name else "")


def exported(settings: Settings, register_map: RegisterMap | None = None) -> list[Exported]:
    rmap = register_map or load_map()
    out: list[Exported] = []
    for i in range(1, settings.n_mains + 1):
        for suffix, key, index, cls, what in MAIN:
            p = rmap.by_name[f"main{i}_{suffix}"]
            out.append(Exported(p, f"main{i}_{suffix}", f"Main {i} {what}", "mains", i, key,
                                index, cls, "measurement"))
    for m in range(1, N_METERS + 1):
        meter = settings.meters[m - 1]
        label = _label("Meter", m, meter.name)
        for suffix, key, cls, state, what in (*ELEMENT, *METER_EXTRA):
            p = rmap.by_name[f"meter{m}_{suffix}"]
            out.append(Exported(p, f"meter{m}_{suffix.removesuffix('_f32')}", f"{label} {what}",
                                "meters", m, key, None, cls, state))
        for j, used in enumerate(meter.wiring.used_cts):
            if not used:
                continue
            k = CTS_PER_METER * (m - 1) + j + 1
            ct_label = _label("CT", k, meter.ct_names[j])
            for suffix, key, cls, state, what in ELEMENT:
                p = rmap.by_name[f"ct{k}_{suffix}"]
                out.append(Exported(p, f"ct{k}_{suffix.removesuffix('_f32')}",
                                    f"{ct_label} {what}", "cts", k, key, None, cls, state))
    return out


def word_swapped(settings: Settings) -> bool:
    """Whether 32-bit values come low word first (the meter's default), i.e. CDAB."""
    return settings.modbus.word_order == "low-first"
