"""Writes ``map.csv`` once from the layout below, so the 24-CT repetitions are not typed by hand.

The committed CSV, not this script, is what the meter reads at run time; a test checks that
the two agree. Run ``python -m pm4324.registers.build_map`` after changing the layout here, or
edit the CSV and this script together.

Layout (details and evidence in docs/registers.md):

* coils 0x1000/0x1001: relays 1 and 2 [M]; 0x1010/0x1011: relay alarm mode [M address, ours
  meaning]
* input 0x1000..0x100B: identity and snapshot stamp [ours; type code values from the
  concentrator manual]; 0x1010 / 0x1030: main 1 / main 2 voltages, frequency, THD [ours]
* input 0x1000 + 0x100*m (Meter m = 1..8): phases a/b/c at +0x00/+0x12/+0x24 and the Meter
  total at +0x36, 9 floats each (V, I, kW, kvar, kVA [D], then ours); frequencies +0x48..+0x4E
  [D]; energies +0x50..+0x69 [ours]; wiring code +0x6A [D]; flags, all energies as float32
  and as uint32 (0.01 kWh) +0x6C..+0xDF [ours]
* holding 0x1000..0x1016: CT ratios, PT ratios, wiring, word order, energy reset (writable),
  communication settings (read-only)
* holding 0x1020..0x1026: relay modes, power-up states, any/all, alarm acknowledge [ours];
  holding 0x1100 + 0x10*(k-1): alarm rule slot k = 1..16 [ours]; input 0x1080/0x1081:
  alarm outputs and unacknowledged latches, one bit per slot [ours]; input 0x1082/0x1084:
  audit entries dropped and writes refused (uint32) [ours]
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from pm4324.config.alarm_settings import (
    COMBINE,
    COMPARISONS,
    MAX_ALARMS,
    MAX_DELAY_S,
    POWER_UP,
    QUANTITIES,
    RELAY_MODES,
    TARGET_KINDS,
)
from pm4324.config.settings import N_METERS
from pm4324.registers.table import COLUMNS, TABLES

PHASES = ("a", "b", "c")
ENERGY_UNITS = {
    "wh_import": ("kwh_import", "kWh", "import active energy"),
    "wh_export": ("kwh_export", "kWh", "export active energy"),
    "varh_q1": ("kvarh_q1", "kvarh", "reactive energy, quadrant I"),
    "varh_q2": ("kvarh_q2", "kvarh", "reactive energy, quadrant II"),
    "varh_q3": ("kvarh_q3", "kvarh", "reactive energy, quadrant III"),
    "varh_q4": ("kvarh_q4", "kvarh", "reactive energy, quadrant IV"),
    "vah": ("kvah", "kVAh", "apparent energy"),
}
SUMMARY_ENERGIES = (
    ("wh_import", "kwh", "kWh", "import active energy"),
    ("varh_import", "kvarh", "kvarh", "import reactive energy (QI + QII)"),
    ("vah", "kvah", "kVAh", "apparent energy"),
)
READ_NOTE = " (row read at Meter 8 in the v1.00 manual; 0x100 stride per Meter)"
PATTERN_NOTE = " (phase-c layout of Meter 8 repeated at 0x12 steps)"


class _Rows:
    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []

    def add(self, name: str, table: str, address: int, type_: str, unit: str, source: str,
            evidence: str, description: str, *, scale: str = "1", access: str = "R",
            lo: int | None = None, hi: int | None = None) -> None:
        self.rows.append({
            "name": name, "table": table, "address": f"0x{address:04X}", "type": type_,
            "unit": unit, "scale": scale, "min": "" if lo is None else str(lo),
            "max": "" if hi is None else str(hi), "access": access, "source": source,
            "evidence": evidence, "description": description,
        })


def _coils(r: _Rows) -> None:
    for k in (1, 2):
        r.add(f"relay{k}", "coil", 0x0FFF + k, "bit", "", f"relay:{k}", "M",
              f"Relay {k} (DO{k - 1}) state, and manual control: 0 = open, 1 = closed "
              "(writable in manual mode only)",
              access="RW")
    # The manual's coil table has a second R/W pair, 0 = OFF / 1 = ON, whose label the scrape
    # lost; of the candidates the reference names, alarm-mode enable is the one that is a
    # two-state switch (the power-up state has three), so that is what they serve.
    for k in (1, 2):
        r.add(f"relay{k}_alarm_mode", "coil", 0x100F + k, "bit", "", f"setting:relays.{k}.mode",
              "ours", f"Relay {k} alarm mode, the same setting as holding relay{k}_mode: "
              f"0 = OFF (manual, coil 0x{0x0FFF + k:04X} switches the relay), 1 = ON (alarm, its "
              "rules switch it). Address, R/W and 0/1 from the manual [M]; the meaning is ours, "
              "the closest documented one (label lost)", access="RW")


def _device(r: _Rows) -> None:
    r.add("model_code", "input", 0x1000, "uint16", "", "setting:model", "ours",
          "Power meter type: 4324 = PM-4324, 43240 = PM-4324A (values as the concentrator "
          "reads them [P]; address ours)")
    r.add("ct_input_type", "input", 0x1001, "uint16", "", "setting:ct_input", "ours",
          "CT input type: 0 = clip-on CTs (PM-4324, PM-4324A), 1 = 333 mV CTs (the PM-4324P "
          "variant; code and address ours: the vendor's encoding is not public)")
    r.add("reserved_1002", "input", 0x1002, "uint16", "", "const:reserved", "ours",
          "Reserved, reads 0")
    r.add("firmware_version", "input", 0x1003, "bcd", "", "const:firmware_bcd", "ours",
          "Firmware version, BCD: 0x0100 = 1.00 (format as the concentrator reads it [P])",
          scale="0.01")
    r.add("device_address", "input", 0x1004, "uint16", "", "setting:modbus.address", "ours",
          "Modbus address of the meter, 1..247")
    r.add("meter_status", "input", 0x1005, "uint16", "", "snapshot.status", "ours",
          "Meter status word, bit mask: 1 no data yet, 2 energies or events not saved, "
          "4 relay driver failed, 8 clock stepped, 16 nominal voltage out of range "
          "(docs/registers.md)")
    r.add("snapshot_seq", "input", 0x1006, "uint32", "", "snapshot.seq", "ours",
          "Sequence number of the second served (0 before the first snapshot); wraps at 2^32")
    r.add("snapshot_time", "input", 0x1008, "uint32", "s", "snapshot.time", "ours",
          "Unix time of the end of that second, rounded to whole seconds (0 before the first snapshot)")
    r.add("snapshot_duration", "input", 0x100A, "float32", "s", "snapshot.duration_s", "ours",
          "Length of the whole cycles the second covers")


def _mains(r: _Rows) -> None:
    for i in (1, 2):
        base = 0x1010 + 0x20 * (i - 1)
        who = f"Main {i} (V{i} inputs{', PM-4324A only' if i == 2 else ''})"
        for j, p in enumerate(PHASES):
            r.add(f"main{i}_v_{p}n", "input", base + 2 * j, "float32", "V",
                  f"main.v_ln[{i}][{j + 1}]", "ours", f"{who}: voltage {p}-N")
        for j, pair in enumerate(("ab", "bc", "ca")):
            r.add(f"main{i}_v_{pair}", "input", base + 6 + 2 * j, "float32", "V",
                  f"main.v_ll[{i}][{j + 1}]", "ours", f"{who}: voltage {pair[0]}-{pair[1]}")
        r.add(f"main{i}_hz", "input", base + 0x0C, "float32", "Hz", f"main.frequency_hz[{i}]",
              "ours", f"{who}: frequency")
        for j, p in enumerate(PHASES):
            r.add(f"main{i}_thd_v_{p}", "input", base + 0x0E + 2 * j, "float32", "%",
                  f"main.thd_v_pct[{i}][{j + 1}]", "ours", f"{who}: voltage THD, phase {p}")
        r.add(f"main{i}_flags", "input", base + 0x14, "uint16", "", f"main.flags[{i}]", "ours",
              f"{who}: quality flags (bit mask, see Flags)")


def _group(
    r: _Rows, prefix: str, base: int, group: str, index: int, who: str, note: str
) -> None:
    """One 9-float group: V, I, kW, kvar, kVA [D] then four floats of ours."""
    items = [
        ("v", "V", "v_rms", "D", "RMS voltage"),
        ("i", "A", "i_rms", "D", "RMS current"),
        ("kw", "kW", "p_w", "D", "active power P"),
        ("kvar", "kvar", "q_var", "D", "reactive power Q (fundamental, signed)"),
        ("kva", "kVA", "s_va", "D", "apparent power S"),
        ("pf", "PF", "pf", "ours", "power factor P/S (signed like P)"),
    ]
    if group == "ct":
        items += [
            ("thd_v", "%", "thd_v_pct", "ours", "voltage THD"),
            ("thd_i", "%", "thd_i_pct", "ours", "current THD"),
        ]
    else:
        items += [
            ("kva_arith", "kVA", "s_arith_va", "ours", "arithmetic apparent power (sum of S)"),
            ("kva_vector", "kVA", "s_vector_va", "ours", "vector apparent power |P + jQ|"),
        ]
    items.append(("lead_lag", "", "lead_lag", "ours",
                  "lead/lag: 1 = lagging (inductive), -1 = leading, 0 = neither"))
    for n, (suffix, unit, field, evidence, text) in enumerate(items):
        r.add(f"{prefix}_{suffix}", "input", base + 2 * n, "float32", unit,
              f"{group}.{field}[{index}]", evidence,
              f"{who}: {text}{note if evidence == 'D' else ''}")


def _meter(r: _Rows, m: int) -> None:
    base = 0x1000 + 0x100 * m
    elements = []
    for j, p in enumerate(PHASES):
        k = 3 * (m - 1) + j + 1
        elements.append((f"ct{k}", "ct", k, f"CT{k} (Meter {m} phase {p})"))
    elements.append((f"meter{m}", "meter", m, f"Meter {m} total"))
    for n, (prefix, group, index, who) in enumerate(elements):
        _group(r, prefix, base + 0x12 * n, group, index, who, PATTERN_NOTE if n < 2 else READ_NOTE)
    for n, (prefix, group, index, who) in enumerate(elements):
        r.add(f"{prefix}_hz", "input", base + 0x48 + 2 * n, "float32", "Hz",
              f"{group}.frequency_hz[{index}]", "D",
              f"{who}: frequency, 45..65 Hz{READ_NOTE}")
    address = base + 0x50
    for prefix, group, index, who in elements:
        for field, suffix, unit, text in SUMMARY_ENERGIES:
            r.add(f"{prefix}_{suffix}", "input", address, "float32", unit,
                  f"{group}_energy.{field}[{index}]", "ours", f"{who}: {text}")
            address += 2
    r.add(f"meter{m}_reserved_68", "input", base + 0x68, "float32", "", "const:reserved",
          "ours", "Reserved, reads 0.0")
    r.add(f"meter{m}_wiring", "input", base + 0x6A, "float32", "", f"setting:meters.{m}.wiring",
          "D", f"Meter {m} wiring code 0..4 (read-back; code order is ours, see Wiring codes)"
          f"{READ_NOTE}")
    for n, (prefix, group, index, who) in enumerate(elements):
        r.add(f"{prefix}_flags", "input", base + 0x6C + n, "uint16", "",
              f"{group}.flags[{index}]", "ours", f"{who}: quality flags (bit mask, see Flags)")
    for n, (prefix, group, index, who) in enumerate(elements):
        for k, (field, (suffix, unit, text)) in enumerate(ENERGY_UNITS.items()):
            source = f"{group}_energy.{field}[{index}]"
            r.add(f"{prefix}_{suffix}_f32", "input", base + 0x70 + 14 * n + 2 * k, "float32",
                  unit, source, "ours", f"{who}: {text}")
            r.add(f"{prefix}_{suffix}_u32", "input", base + 0xA8 + 14 * n + 2 * k, "uint32",
                  unit, source, "ours",
                  f"{who}: {text}, integer in 0.01 {unit}; rolls over to 0 after 42,949,672.95",
                  scale="0.01")


def _holding(r: _Rows) -> None:
    for m in range(1, N_METERS + 1):
        r.add(f"ct_ratio_meter{m}", "holding", 0x0FFF + m, "uint16", "",
              f"setting:meters.{m}.ct_ratio", "D" if m == 1 else "ours",
              f"CT ratio of Meter {m} (rated primary A per CT), 1..65535"
              + (" (manual's first system parameter, range 1~65535)" if m == 1 else ""),
              access="RW", lo=1, hi=65535)
    for i in (1, 2):
        only_a = "; PM-4324A only, reads 0 on PM-4324" if i == 2 else ""
        r.add(f"pt_ratio_main{i}", "holding", 0x1007 + i, "uint16", "",
              f"setting:mains.{i}.pt_ratio", "ours",
              f"PT ratio of main {i}, 0.01 units: 1..65535 = 0.01..655.35 (range as the "
              f"concentrator reads it [P]){only_a}",
              scale="0.01", access="RW", lo=1, hi=65535)
    for m in range(1, N_METERS + 1):
        r.add(f"wiring_meter{m}", "holding", 0x1009 + m, "uint16", "",
              f"setting:meters.{m}.wiring", "ours", f"Wiring code of Meter {m}, 0..4 "
              "(see Wiring codes)", access="RW", lo=0, hi=4)
    r.add("word_order", "holding", 0x1012, "uint16", "", "setting:modbus.word_order", "ours",
          "32-bit word order: 0 = low word first (default), 1 = high word first",
          access="RW", lo=0, hi=1)
    r.add("energy_reset", "holding", 0x1013, "uint16", "", "command:energy_reset", "ours",
          "Energy reset: write 1..8 = that Meter and its three CTs, 9 = all; 0 = no action; "
          "reads 0", access="RW", lo=0, hi=9)
    r.add("comm_address", "holding", 0x1014, "uint16", "", "setting:modbus.address", "ours",
          "Modbus address 1..247 (DIP switches / settings file; read-only)")
    r.add("comm_baud", "holding", 0x1015, "uint16", "baud", "setting:modbus.baud", "ours",
          "RS-485 baud rate in 100 baud: 96, 192, 384, 1152 (read-only)", scale="100")
    r.add("comm_format", "holding", 0x1016, "uint16", "", "setting:modbus.data_format", "ours",
          "RS-485 data format: 0 N81, 1 N82, 2 E81, 3 E82, 4 O81, 5 O82 (read-only)")


def _codes(values: tuple[str, ...]) -> str:
    return ", ".join(f"{k} {v}" for k, v in enumerate(values))


def _alarms(r: _Rows) -> None:
    for n, (field, values, text) in enumerate((
        ("mode", RELAY_MODES, "mode (coil writes are refused in alarm mode)"),
        ("power_up", POWER_UP, "state at power-up in manual mode"),
        ("combine", COMBINE, "alarm mode: closed when any / all of its rules are on"),
    )):
        for k in (1, 2):
            r.add(f"relay{k}_{field}", "holding", 0x1020 + 2 * n + k - 1, "uint16", "",
                  f"setting:relays.{k}.{field}", "ours", f"Relay {k} {text}: {_codes(values)}",
                  access="RW", lo=0, hi=len(values) - 1)
    r.add("alarm_ack", "holding", 0x1026, "uint16", "", "command:alarm_ack", "ours",
          "Acknowledge latched alarms: write 1 = relay 1's rules, 2 = relay 2's, 3 = all; "
          "0 = no action; reads 0", access="RW", lo=0, hi=3)
    r.add("audit_dropped", "input", 0x1082, "uint32", "", "security:audit_dropped", "ours",
          "Audit log entries lost (evicted for size before their age, or queue full) since the "
          "log was created (docs/security.md)")
    r.add("writes_refused", "input", 0x1084, "uint32", "", "security:writes_refused", "ours",
          "Write requests refused by the write policy or the client's role since power-up")
    for state, text in (("active", "with their output on (raised, or latched)"),
                        ("unacked", "latched and not yet acknowledged")):
        r.add(f"alarm_{state}", "input", 0x1080 + (state == "unacked"), "uint16", "",
              f"alarm:{state}", "ours", f"Alarm rules {text}: bit k-1 = rule k")
    fields = (
        ("relay", "uint16", "", 0, 2, "relay it drives: 1, 2; 0 = free slot (not evaluated)"),
        ("quantity", "uint16", "", 0, len(QUANTITIES) - 1, "quantity: " + _codes(QUANTITIES)),
        ("target_kind", "uint16", "", 0, len(TARGET_KINDS) - 1,
         "target kind: " + _codes(TARGET_KINDS)),
        ("target_index", "uint16", "", 1, 24, "target number: CT 1..24, Meter 1..8, main 1..2"),
        ("comparison", "uint16", "", 0, len(COMPARISONS) - 1,
         "comparison: " + _codes(COMPARISONS)),
        ("latch", "uint16", "", 0, 1, "1 = latch until acknowledged"),
        ("on_delay_s", "uint16", "s", 0, MAX_DELAY_S, "seconds past the limit before it is raised"),
        ("off_delay_s", "uint16", "s", 0, MAX_DELAY_S, "seconds back inside before it clears"),
        ("threshold", "float32", "", -10**9, 10**9,
         "threshold (above/below), in the quantity's unit: V, A, kW, kvar, kVA, PF, Hz, %"),
        ("band_low", "float32", "", -10**9, 10**9, "band low edge (outside)"),
        ("band_high", "float32", "", -10**9, 10**9, "band high edge (outside)"),
        ("hysteresis", "float32", "", 0, 10**9, "hysteresis, in the quantity's unit"),
    )
    for k in range(1, MAX_ALARMS + 1):
        address = 0x1100 + 0x10 * (k - 1)
        for field, type_, unit, lo, hi, text in fields:
            r.add(f"alarm{k}_{field}", "holding", address, type_, unit,
                  f"setting:alarms.{k}.{field}", "ours", f"Alarm rule {k}: {text}",
                  access="RW", lo=lo, hi=hi)
            address += 2 if type_ == "float32" else 1


def build_rows() -> list[dict[str, str]]:
    r = _Rows()
    _coils(r)
    _device(r)
    _mains(r)
    for m in range(1, N_METERS + 1):
        _meter(r, m)
    _holding(r)
    _alarms(r)
    return sorted(r.rows, key=lambda row: (TABLES.index(row["table"]), row["address"]))


def render() -> str:
    """The CSV text of the layout (what ``map.csv`` must contain)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(build_rows())
    return out.getvalue()


def main() -> None:
    path = Path(__file__).with_name("map.csv")
    path.write_text(render(), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
