"""EDS (CiA 306) writer, and the object table of docs/canopen.md, from the object dictionary.

``python -m pm4324.protocols.canopen.eds`` writes one EDS per model (docs/pm4324-cps.eds,
docs/pm4324a-cps.eds: the identity 0x1008 / 0x1018 of each) and refreshes the generated table
in docs/canopen.md; a test fails when a committed file is stale. The output does not depend
on the settings or the clock: the same register table gives the same bytes.

Written for the strictest of the tools masters use, so that lely's ``dcfchk`` (dcf-tools),
oresat's ``eds-validate`` (eds-utils) and python-canopen all accept it without a warning:

* only keys CiA 306 defines. Unit, scale (value = raw x factor) and description of an entry
  go to ``;`` comment lines just above its section, where every tool skips them;
* at most one ``=`` in a line (eds-utils splits each line on every ``=``); comment lines
  have none;
* no REAL32 limit or default other than 0: lely reads them as IEEE-754 bit patterns
  (``0x3F800000``), python-canopen as decimals (``1.0``), and only ``0`` means the same in
  both. The node still checks a write against the entry's range;
* ``[DummyUsage]`` lists all seven Dummy000x keys, which python-canopen's importer requires.
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
    PRODUCT_CODES,
    REVISION,
    VENDOR_ID,
    default_dictionary,
)
from pm4324.protocols.canopen.pdo import DUMMY_BITS

COMMAND = "python -m pm4324.protocols.canopen.eds"
EDS_PATHS = {"PM-4324": "docs/pm4324-cps.eds", "PM-4324A": "docs/pm4324a-cps.eds"}
DOC_PATH = "docs/canopen.md"
EDS_DATE = "12-04-2026"  # bump by hand with FileVersion when the EDS changes meaning
FILE_VERSION = 2
BITRATES_KBIT = (10, 20, 50, 125, 250, 500, 800, 1000)
SUPPORTED_KBIT = (125, 250, 500, 1000)  # settings.CAN_BITRATES
MANDATORY = (0x1000, 0x1001, 0x1018)
LSS_SUPPORTED = True
TABLE_START, TABLE_END = "<!-- od-table:start (generated) -->", "<!-- od-table:end -->"
PDO_RANGES = ((0x1400, 0x1600 + N_RPDO), (0x1800, 0x1A00 + N_TPDO))


def _clean(text: str) -> str:
    """An EDS value on one line: no ';' or ' #' (comment starts), no '=' (eds-utils)."""
    text = text.replace(" = ", " is ").replace("=", ":").replace(";", ",").replace("#", "no. ")
    return " ".join(text.split())


def _value(e: Entry, value: int | float | str) -> str:
    if e.data_type is DataType.VISIBLE_STRING:
        return _clean(str(value))
    if e.data_type is DataType.REAL32:
        return "0"  # the only REAL32 value lely and python-canopen read alike
    width = 2 * (e.size or 4)
    text = f"0x{int(value) & (1 << 4 * width) - 1:0{width}X}" if value >= 0 else str(int(value))
    return f"$NODEID+{text}" if e.node_relative else text


def _comments(e: Entry) -> list[str]:
    """What CiA 306 has no key for (unit, scale, description), as ';' comment lines."""
    lines = []
    if e.description:
        lines.append(f";{_clean(e.description)}")
    scale = f" x {e.factor:g}" if e.factor is not None and e.factor != 1 else ""
    if e.unit:
        lines.append(f";Unit: {_clean(e.unit)}" + (f" (value in unit: raw{scale})" if scale else ""))
    return lines


def _written(e: Entry, value: int | float | None) -> bool:
    """Whether a default or limit goes into the EDS (REAL32: only 0, see above)."""
    return value is not None and (e.data_type is not DataType.REAL32 or value == 0)


def _entry_lines(section: str, e: Entry, name: str) -> list[str]:
    lines = [*_comments(e), f"[{section}]", f"ParameterName={_clean(name)}", "ObjectType=0x7",
             f"DataType=0x{int(e.data_type):04X}", f"AccessType={e.access}"]
    for key, value in (("DefaultValue", e.default), ("LowLimit", e.low), ("HighLimit", e.high)):
        if _written(e, value):
            lines.append(f"{key}={_value(e, value)}")
    lines.append(f"PDOMapping={int(e.pdo)}")
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


def _comment_lines(product: str) -> tuple[str, ...]:
    return (
        f"{product} (ICP DAS PM-4324 / PM-4324A, CANopen) as emulated by the pm4324 software meter.",
        "Generated from the register table map.csv by `" + COMMAND + "`, do not edit.",
        "0x3200 kW (INTEGER32, W) and 0x3201 kWh (INTEGER32, 0.01 kWh): sub n is 4(m-1)+k,",
        "k 1..3 is CT 3(m-1)+k, k 4 is Meter m total. TPDO n maps 0x3200:n and 0x3201:n.",
        "TPDO n > 4: CAN-ID of TPDO((n-1) mod 4) of node-ID $NODEID + (n-1) div 4, wrapping 127 -> 1,",
        "the DefaultValue $NODEID+ offsets below are exact for node-IDs 1..120.",
        f"Event-driven TPDOs (type 254) on each snapshot, event timer {DEFAULT_EVENT_TIMER_MS} ms.",
        "0x2000.. objects carry the raw numbers of the Modbus registers of the same name.",
        "0x1018:4 serial number: per meter instance (from its .meter-id file), 0 here.",
    )


def render_eds(d: Dictionary, model: str = "PM-4324") -> str:
    """The EDS text of a dictionary, for ``model`` (its name and product code)."""
    product = f"{model}-CPS"
    comments = _comment_lines(product)
    lines = [
        "[FileInfo]", f"FileName={Path(EDS_PATHS[model]).name}",
        f"FileVersion={FILE_VERSION}", "FileRevision=0", "EDSVersion=4.0",
        f"Description={product} multi-circuit power meter (pm4324 software emulation)",
        "CreationTime=12:00PM", f"CreationDate={EDS_DATE}", "CreatedBy=pm4324",
        "ModificationTime=12:00PM", f"ModificationDate={EDS_DATE}", "ModifiedBy=pm4324", "",
        "[DeviceInfo]", "VendorName=ICP DAS (emulated by pm4324)",
        f"VendorNumber=0x{VENDOR_ID:08X}", f"ProductName={product}",
        f"ProductNumber={PRODUCT_CODES[model]}",
        f"RevisionNumber=0x{REVISION:08X}", f"OrderCode={product}",
        *(f"BaudRate_{k}={int(k in SUPPORTED_KBIT)}" for k in BITRATES_KBIT),
        "SimpleBootUpMaster=0", "SimpleBootUpSlave=1", "Granularity=8",
        "DynamicChannelsSupported=0", "GroupMessaging=0", f"NrOfRXPDO={N_RPDO}",
        f"NrOfTXPDO={N_TPDO}", f"LSS_Supported={int(LSS_SUPPORTED)}", "",
        "[DummyUsage]",
        *(f"Dummy{i:04d}={int(i in DUMMY_BITS)}" for i in range(1, 8)), "",
        "[Comments]", f"Lines={len(comments)}",
        *(f"Line{i}={_clean(text)}" for i, text in enumerate(comments, start=1)), "",
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
            origin = "CiA 301" if obj.index < 0x2000 else "settings [canopen] or LSS"
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
    doc = (root / DOC_PATH).read_text(encoding="utf-8")
    files = {path: render_eds(default_dictionary(model), model) for model, path in EDS_PATHS.items()}
    return {**files, DOC_PATH: render_doc(doc, default_dictionary())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the EDS of each model and the table of "
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
