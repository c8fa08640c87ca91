"""Generates docs/registers.md and docs/registers.json from the register table.

The table (``map.csv``) is the only source; these files are views of it, committed so that
readers need no Python. A test regenerates them in memory and fails when the committed copies
are stale. Run ``python -m pm4324.registers.docs`` to rewrite them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pm4324.config.alarm_settings import MAX_ALARMS, TARGET_QUANTITIES
from pm4324.config.settings import Wiring
from pm4324.registers.image import FIRMWARE_VERSION, RESET_ALL
from pm4324.registers.table import (
    EVIDENCE,
    EVIDENCED,
    MAX_BITS,
    MAX_REGISTERS,
    Point,
    RegisterMap,
    load_map,
)
from pm4324.snapshot import Flag

MAP_PATH = "src/pm4324/registers/map.csv"
COMMAND = "python -m pm4324.registers.docs"
TABLE_TITLES = {
    "coil": ("Coils", "FC 01 read, FC 05/15 write", 1),
    "discrete": ("Discrete inputs", "FC 02", 10001),
    "input": ("Input registers", "FC 04", 30001),
    "holding": ("Holding registers", "FC 03 read, FC 06/16 write", 40001),
}
TAG_NOTES = {
    "M": "Evidenced: read directly in a manual page (the relay coils).",
    "P": "Evidenced by how the vendor's concentrator reads the meter.",
    "S": "Evidenced by a sibling meter's manual only.",
    "D": "Evidenced but provisional: addresses read for Meter 8 in the v1.00 manual and "
    "extended to the other phases and Meters by the pattern (phase stride 0x12, Meter stride "
    "0x100), and holding 0x1000 (the first system parameter, range 1~65535). Verify against "
    "a real unit.",
    "ours": "Not evidenced: the manual pages for these registers are missing, so the address, "
    "type and meaning are this project's design. A real PM-4324 may answer them with other "
    "data or exception 02.",
}

CONVENTIONS = f"""\
## Conventions

* **Addresses** are the 0-based on-wire (PDU) addresses, in hex. The manual's 5-digit
  numbers are 00001 + address (coils), 10001 + address (discrete inputs), 30001 + address
  (input registers) and 40001 + address (holding registers), e.g. coil 0x1000 = 04097.
* **Function codes**: 01, 02, 03, 04, 05, 06, 15 (0x0F), 16 (0x10) and 43/14 (0x2B/0x0E, read
  device identification); any other gets exception 01. A read may ask for at most
  {MAX_REGISTERS} registers or {MAX_BITS} bits (else exception 03).
* **32-bit values** (float32, uint32, int32) take two registers. By default the **low word
  is sent first**, each word high byte first: 230.5 = 0x43668000 is sent as `0x8000 0x4366`
  (byte order C D A B). Holding register `word_order` (0x1012) = 1 selects high word first
  (`0x4366 0x8000`); it applies to every 32-bit value from the next response on and is saved
  to the settings file (`[modbus] word_order`).
* **Reads** may start or end at any address inside a mapped point, including one half of a
  32-bit value (as the sibling ICP DAS meters allow). If any address of a request is not
  mapped (the gaps between blocks included) the whole request gets exception 02.
* **One second per response**: every register of one response comes from the same
  one-second snapshot. Registers of *different* requests may come from different seconds;
  `snapshot_seq` (input 0x1006) tells which second a block belongs to.
* **No data** (before the first second, a value the meter could not compute, main 2 on a
  PM-4324): float32 reads NaN (`0x0000 0x7FC0` low word first), integers read 0 and the
  quality flags read `no_data` (32) until the first second.
* **Writes** must cover whole writable points. A request that touches an unmapped or
  read-only register, or only one half of a 32-bit point, gets exception 02; a value outside
  the row's range (or one the settings refuse, such as an alarm band whose low end is above
  its high end) gets exception 03. Either way nothing changes. A register the model lacks
  (`pt_ratio_main2` on a PM-4324) gets exception 02 whatever the value.
* **PT ratio** (holding 0x1008/0x1009): every value of 0.01..655.35 is taken, as on the real
  meter. If the nominal voltage divided by it lies outside the inputs' 10..500 V, the meter
  still takes it, logs a `voltage_range` event and sets bit 16 of `meter_status` (0x1005).
  A valid multi-register write is applied as one settings change and saved to the settings
  file, so it survives a restart.
* **Energy reset** (holding 0x1013): write 1..8 to zero the energies of that Meter and of its
  three CTs, {RESET_ALL} to zero all; 0 does nothing (so a block read can be written back).
  It always reads 0.
* **Integer energies** (`*_u32`): uint32 in 0.01 kWh / kvarh / kVAh, 0..42,949,672.95; on
  overflow they roll over to 0 (modulo 2^32) like an odometer. The float32 copies hold the
  same energies in kWh / kvarh / kVAh (7 significant digits).
* **Identity**: input 0x1000 is the type code (4324 = PM-4324, 43240 = PM-4324A), 0x1003 the
  firmware version in BCD (0x{int(float(FIRMWARE_VERSION) * 100):04d} = {FIRMWARE_VERSION}).
  FC 43/14 (read device identification) answers vendor "ICP DAS", product code = the model.
* **Relays** (coils 0x1000/0x1001) read the relay state. They can be written only while the
  relay is in manual mode (`relayK_mode` = 0, holding 0x1020/0x1021): in alarm mode the relay
  follows its rules and the coil is read-only, so a write gets exception 02 and changes
  nothing. Coils 0x1010/0x1011 are the same mode as a switch (0 = OFF = manual, 1 = ON =
  alarm): the manual lists them as R/W 0 = OFF / 1 = ON with their label lost, and of the
  meanings the device reference suggests, alarm-mode enable is the one with two states.
  See docs/relays-and-alarms.md for power-up states and rule behaviour.
* **Alarm rules** (holding 0x1100 + 0x10·(k−1), slot k = 1..{MAX_ALARMS}): codes as in the
  table below. Write a whole slot (16 registers) in one FC 16 request: the request is checked
  as one settings change (e.g. band low < high), applied, and saved to the settings file.
  A slot with relay 0 is free. **Acknowledge** (holding 0x1026): 1 = relay 1's latched
  alarms, 2 = relay 2's, 3 = all; reads 0. **Alarm status** (input 0x1080 / 0x1081): bit
  k−1 = rule k is on / latched and unacknowledged.
* **Not served**: the harmonic spectra (orders 0..50 per CT) have no registers; all discrete
  inputs answer exception 02.
* **Communication settings** (holding 0x1014..0x1016) are read-only: like the DIP switches of
  the real meter they are read at start-up, from the settings file.
"""


def _wiring_codes() -> str:
    rows = "\n".join(f"| {w.code} | {w.value} |" for w in Wiring)
    return (
        "## Wiring codes\n\nThe vendor's code order is unknown; this order is ours.\n\n"
        f"| Code | Wiring |\n|---|---|\n{rows}\n"
    )


def _flags() -> str:
    rows = "\n".join(f"| {f.value} | `{f.name.lower()}` |" for f in Flag)
    return (
        "## Flags\n\nQuality flag registers (`*_flags`) are bit masks, 0 = good.\n\n"
        f"| Bit value | Flag |\n|---|---|\n{rows}\n"
    )


def _alarm_codes() -> str:
    from pm4324.registers.alarm_codes import ALARM_CODES, RELAY_CODES

    rows = [f"| `{name}` | {', '.join(f'{k} = {v}' for k, v in enumerate(values))} |"
            for name, values in {**RELAY_CODES, **ALARM_CODES}.items()]
    kinds = "; ".join(f"{kind}: {', '.join(q)}" for kind, q in TARGET_QUANTITIES.items())
    return ("## Relay and alarm codes\n\n| Field | Codes |\n|---|---|\n" + "\n".join(rows)
            + f"\n\nQuantities each target has: {kinds}.\n")


def _legend(points: Iterable[Point]) -> str:
    counts: dict[str, int] = {}
    for p in points:
        counts[p.evidence] = counts.get(p.evidence, 0) + 1
    rows = "\n".join(
        f"| [{tag}] | {meaning} | {counts.get(tag, 0)} | {TAG_NOTES[tag]} |"
        for tag, meaning in EVIDENCE.items()
    )
    evidenced = sum(counts.get(t, 0) for t in EVIDENCED)
    return (
        "## Evidence tags\n\nEvery row carries the evidence for its address and meaning, "
        "with the tags of the project's device reference. "
        f"{evidenced} rows are evidenced ([M], [P], [S], [D]); "
        f"{counts.get('ours', 0)} are ours.\n\n"
        "| Tag | Meaning | Rows | Notes |\n|---|---|---|---|\n" + rows + "\n"
    )


def _runs(points: tuple[Point, ...]) -> list[list[Point]]:
    """Split a table's points into runs of consecutive addresses (one block each)."""
    runs: list[list[Point]] = []
    for p in points:
        if runs and runs[-1][-1].end == p.address:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def _run_title(run: list[Point]) -> str:
    """Name a block by what it serves: one Meter, one main, the relays, settings or device."""
    meters, mains, kinds = set(), set(), set()
    for p in run:
        s = p.source
        kinds.add(s.kind)
        if s.group in ("ct", "ct_energy"):
            meters.add((s.index - 1) // 3 + 1)
        elif s.group in ("meter", "meter_energy"):
            meters.add(s.index)
        elif s.group == "main":
            mains.add(s.index)
    span = f"0x{run[0].address:04X}–0x{run[-1].end - 1:04X}"
    if len(meters) == 1 and not mains:
        m = meters.pop()
        return f"Meter {m}: CT{3 * m - 2}, CT{3 * m - 1}, CT{3 * m} and total ({span})"
    if len(mains) == 1 and not meters:
        return f"Main {mains.pop()} ({span})"
    if meters or mains:
        return span
    if kinds == {"relay"}:
        return f"Relays ({span})"
    if kinds == {"alarm"}:
        return f"Alarm status ({span})"
    groups = {p.source.group for p in run} - {""}
    if groups == {"alarms"}:
        return f"Alarm rules 1–{MAX_ALARMS} ({span})"
    if groups == {"relays"}:
        acknowledge = any(p.source.kind == "command" for p in run)
        return f"Relay modes{' and alarm acknowledge' if acknowledge else ''} ({span})"
    return f"{'Settings' if kinds <= {'setting', 'command'} else 'Device'} ({span})"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(run: list[Point], modicon: int) -> str:
    ranged = any(p.minimum is not None for p in run)
    head = "| Address | No. | Name | Type | Unit | Scale | Access |"
    head += " Range |" if ranged else ""
    head += " Tag | Source | Description |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for p in run:
        row = (
            f"| 0x{p.address:04X} | {modicon + p.address:05d} | {p.name} | {p.type} "
            f"| {p.unit} | {p.scale:g} | {p.access} |"
        )
        if ranged:
            row += f" {'' if p.minimum is None else f'{p.minimum}..{p.maximum}'} |"
        row += f" [{p.evidence}] | `{p.source.text}` | {_cell(p.description)} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def render_markdown(register_map: RegisterMap) -> str:
    parts = [
        "# PM-4324 / PM-4324A Modbus register map\n",
        f"Generated from `{MAP_PATH}` by `{COMMAND}`; do not edit by hand.\n"
        "Machine-readable: the CSV itself, and `docs/registers.json`.\n",
        CONVENTIONS,
        _legend(register_map.points),
        _wiring_codes(),
        _flags(),
        _alarm_codes(),
    ]
    for table, (title, codes, modicon) in TABLE_TITLES.items():
        points = register_map.table(table)
        parts.append(f"## {title} ({codes})\n")
        if not points:
            parts.append("None: every address answers exception 02.\n")
        for run in _runs(points):
            parts.append(f"### {_run_title(run)}\n")
            parts.append(_table(run, modicon))
    return "\n".join(parts)


def render_json(register_map: RegisterMap) -> str:
    points = [
        {
            "name": p.name,
            "table": p.table,
            "address": p.address,
            "address_hex": f"0x{p.address:04X}",
            "modicon": TABLE_TITLES[p.table][2] + p.address,
            "type": p.type,
            "registers": p.size if p.type != "bit" else 0,
            "unit": p.unit,
            "scale": p.scale,
            "min": p.minimum,
            "max": p.maximum,
            "access": p.access,
            "source": p.source.text,
            "evidence": p.evidence,
            "description": p.description,
        }
        for p in register_map.points
    ]
    head = {
        "generated_from": MAP_PATH,
        "word_order_default": "low-first",
        "max_registers_per_read": MAX_REGISTERS,
        "evidence": EVIDENCE,
    }
    # one point per line: small diffs when a row changes
    lines = ",\n".join("  " + json.dumps(p, ensure_ascii=False) for p in points)
    return json.dumps(head, indent=1, ensure_ascii=False)[:-2] + f',\n "points": [\n{lines}\n ]\n}}\n'


def outputs(register_map: RegisterMap | None = None) -> dict[str, str]:
    """Generated file (relative to the project root) -> content."""
    m = register_map or load_map()
    return {"docs/registers.md": render_markdown(m), "docs/registers.json": render_json(m)}


def main() -> None:
    root = Path(__file__).resolve().parents[3]
    if not (root / "pyproject.toml").is_file():
        raise SystemExit(f"{COMMAND}: run it from a source checkout (no pyproject.toml in {root})")
    for rel, text in outputs().items():
        (root / rel).write_text(text, encoding="utf-8")
        print(f"wrote {rel}")


if __name__ == "__main__":
    main()
