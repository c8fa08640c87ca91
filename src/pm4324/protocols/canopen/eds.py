"""EDS (CiA 306) writer, and the object table of docs/canopen.md, from the object dictionary.

``python -m pm4324.protocols.canopen.eds`` writes docs/pm4324.eds and refreshes the generated
table in docs/canopen.md; a test fails when either committed file is stale. The output does
not depend on the settings or the clock: the same register table gives the same bytes.

Besides the CiA 306 keys, each manufacturer entry carries ``Unit``, ``Factor`` (value in
Unit = raw x Factor) and ``Description``; tools that do not know them ignore them
(python-canopen reads all three). ``[DummyUsage]`` lists all seven Dummy000x keys, which
python-canopen's importer requires.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pm4324.protocols.canopen.objects import ARRAY, VAR, DataType, Dictionary, Entry, Obj
from pm4324.protocols.canopen.od import (
    DEFAULT_EVENT_TIMER_MS,
    N_RPDO,
    N_TPDO,
    REVISION,
    VENDOR_ID,
    default_dictionary,
)
from pm4324.protocols.canopen.pdo import DUMMY_BITS

COMMAND = "python -m pm4324.protocols.canopen.eds"
EDS_PATH, DOC_PATH = "docs/pm4324.eds", "docs/canopen.md"
EDS_DATE = "01-01-2025"  # bump by hand with FileVersion when the EDS changes meaning
FILE_VERSION = 1
BITRATES_KBIT = (10, 20, 50, 125, 250, 500, 800, 1000)
SUPPORTED_KBIT = (125, 250, 500, 1000)  # settings.CAN_BITRATES
MANDATORY = (0x1000, 0x1001, 0x1018)
TABLE_START, TABLE_END = "<!-- od-table:start (generated) -->", "<!-- od-table:end -->"
PDO_RANGES = ((0x1400, 0x1600 + N_RPDO), (0x1800, 0x1A00 + N_TPDO))


def _clean(text: str) -> str:
    """An EDS value on one line; ';' would start a comment in many parsers."""
    return " ".join(text.replace(";", ",").split())


def _value(e: Entry, value: int | float | str) -> str:
    if e.data_type is DataType.VISIBLE_STRING:
        return _clean(str(value))
    if e.data_type is DataType.REAL32:
        return repr(float(value))
    width = 2 * (e.size or 4)
    text = f"0x{int(value) & (1 << 4 * width) - 1:0{width}X}" if value >= 0 else str(int(value))
    return f"$NODEID+{text}" if e.node_relative else text


def _entry_lines(section: str, e: Entry, name: str) -> list[str]:
    lines = [f"[{section}]", f"ParameterName={_clean(name)}", "ObjectType=0x7",
             f"DataType=0x{int(e.data_type):04X}", f"AccessType={e.access}"]
    if e.default is not None:
        lines.append(f"DefaultValue={_value(e, e.default)}")
    if e.low is not None:
        lines.append(f"LowLimit={_value(e, e.low)}")
    if e.high is not None:
        lines.append(f"HighLimit={_value(e, e.high)}")
    lines.append(f"PDOMapping={int(e.pdo)}")
    if e.unit:
        lines.append(f"Unit={_clean(e.unit)}")
    if e.factor is not None and e.factor != 1:
        lines.append(f"Factor={e.factor:g}")
    if e.description:
        lines.append(f"Description={_clean(e.description)}")
    return lines + [""]


def _object_lines(obj: Obj) -> list[str]:
    head = f"{obj.index:04X}"
    if obj.object_type == VAR:
        return _entry_lines(head, obj.entries[0], obj.name)
    lines = [f"[{head}]", f"ParameterName={_clean(obj.name)}", f"ObjectType=0x{obj.object_type:X}",
             f"SubNumber={len(obj.entries)}", ""]
    for e in obj.entries:
        lines += _entry_lines(f"{head}sub{e.sub:X}", e, e.name)
    return lines


def _list(section: str, indices: list[int]) -> list[str]:
    lines = [f"[{section}]", f"SupportedObjects={len(indices)}"]
    lines += [f"{i}=0x{index:04X}" for i, index in enumerate(indices, start=1)]
    return lines + [""]


COMMENTS = (
    "PM-4324-CPS (ICP DAS PM-4324 / PM-4324A, CANopen) as emulated by the pm4324 software meter.",
    "Generated from the register table map.csv by `" + COMMAND + "`; do not edit.",
    "0x3200 kW (INTEGER32, W) and 0x3201 kWh (INTEGER32, 0.01 kWh): sub n = 4(m-1)+k,",
    "k = 1..3 CT 3(m-1)+k, k = 4 Meter m total. TPDO n maps 0x3200:n and 0x3201:n.",
    "TPDO n > 4: CAN-ID = TPDO((n-1) mod 4) of node-ID $NODEID + (n-1) div 4, wrapping 127 -> 1;",
    "the DefaultValue $NODEID+ offsets below are exact for node-IDs 1..120.",
    f"Event-driven TPDOs (type 254) on each snapshot, event timer {DEFAULT_EVENT_TIMER_MS} ms.",
    "0x2000.. objects carry the raw numbers of the Modbus registers of the same name.",
)


def render_eds(d: Dictionary) -> str:
    """The EDS text of a dictionary."""
    lines = [
        "[FileInfo]", "FileName=pm4324.eds", f"FileVersion={FILE_VERSION}", "FileRevision=0",
        "EDSVersion=4.0",
        "Description=PM-4324-CPS multi-circuit power meter (pm4324 software emulation)",
        "CreationTime=12:00PM", f"CreationDate={EDS_DATE}", "CreatedBy=pm4324",
        "ModificationTime=12:00PM", f"ModificationDate={EDS_DATE}", "ModifiedBy=pm4324", "",
        "[DeviceInfo]", "VendorName=ICP DAS (emulated by pm4324)",
        f"VendorNumber=0x{VENDOR_ID:08X}", "ProductName=PM-4324-CPS", "ProductNumber=4324",
        f"RevisionNumber=0x{REVISION:08X}", "OrderCode=PM-4324-CPS",
        *(f"BaudRate_{k}={int(k in SUPPORTED_KBIT)}" for k in BITRATES_KBIT),
        "SimpleBootUpMaster=0", "SimpleBootUpSlave=1", "Granularity=8",
        "DynamicChannelsSupported=0", "GroupMessaging=0", f"NrOfRXPDO={N_RPDO}",
        f"NrOfTXPDO={N_TPDO}", "LSS_Supported=0", "",
        "[DummyUsage]",
        *(f"Dummy{i:04d}={int(i in DUMMY_BITS)}" for i in range(1, 8)), "",
        "[Comments]", f"Lines={len(COMMENTS)}",
        *(f"Line{i}={_clean(text)}" for i, text in enumerate(COMMENTS, start=1)), "",
    ]
    indices = [o.index for o in d]
    lines += _list("MandatoryObjects", [i for i in indices if i in MANDATORY])
    lines += _list("OptionalObjects", [i for i in indices if i < 0x2000 and i not in MANDATORY])
    lines += _list("ManufacturerObjects", [i for i in indices if i >= 0x2000])
    for obj in d:
        lines += _object_lines(obj)
    return "\n".join(lines)


# -- the object table of docs/canopen.md --------------------------------------------------------


def _in_pdo_ranges(index: int) -> bool:
    return any(lo <= index < hi for lo, hi in PDO_RANGES)


def render_table(d: Dictionary) -> str:
    """Markdown rows for every object outside the PDO parameter ranges."""
    rows = ["| Index | Name | Type | Access | Sub-indices | Unit (raw x factor) | PDO | From |",
            "|---|---|---|---|---|---|---|---|"]
    for obj in d:
        if _in_pdo_ranges(obj.index):
            continue
        e = obj.entries[-1]
        subs = "-" if obj.object_type == VAR else f"1..{len(obj.entries) - 1}"
        scale = f"x {e.factor:g}" if e.factor not in (None, 1) else ""
        unit = " ".join(t for t in (e.unit, scale) if t)
        if e.kind == "point":
            points = [x.point.name for x in obj.entries if x.point is not None]
            origin = f"`{points[0]}`" + (f" .. `{points[-1]}`" if len(points) > 1 else "")
        elif e.kind in ("kw", "kwh"):
            origin = f"`{e.source.field}` of CT/Meter (evidenced object)" if e.source else ""
        else:
            origin = "CiA 301" if obj.index < 0x2000 else "settings [canopen]"
        kind = "ARRAY" if obj.object_type == ARRAY else "RECORD" if obj.entries[0].sub == 0 and \
            obj.object_type != VAR else ""
        type_name = e.data_type.name + (f" {kind}" if kind else "")
        rows.append(f"| 0x{obj.index:04X} | {obj.name} | {type_name} | {e.access} | {subs} | "
                    f"{unit or '-'} | {'yes' if e.pdo else 'no'} | {origin} |")
    return "\n".join(rows)


def render_doc(current: str, d: Dictionary) -> str:
    """``current`` (docs/canopen.md) with its generated table replaced."""
    head, sep, rest = current.partition(TABLE_START)
    _, sep2, tail = rest.partition(TABLE_END)
    if not sep or not sep2:
        raise ValueError(f"{DOC_PATH} lacks the markers {TABLE_START} / {TABLE_END}")
    return f"{head}{TABLE_START}\n{render_table(d)}\n{TABLE_END}{tail}"


def outputs(root: Path) -> dict[str, str]:
    d = default_dictionary()
    doc = (root / DOC_PATH).read_text(encoding="utf-8")
    return {EDS_PATH: render_eds(d), DOC_PATH: render_doc(doc, d)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/pm4324.eds and the table of "
                                     "docs/canopen.md from the register table.")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[4],
                        help="repository root (default: the one this package is in)")
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    stale = []
    for rel, text in outputs(args.root).items():
        path = args.root / rel
        old = path.read_bytes().decode("utf-8") if path.exists() else None
        if old == text:
            continue
        stale.append(rel)
        if not args.check:
            path.write_bytes(text.encode("utf-8"))
            print(f"wrote {path}")
    if args.check and stale:
        print(f"stale: {', '.join(stale)}; run `{COMMAND}`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
