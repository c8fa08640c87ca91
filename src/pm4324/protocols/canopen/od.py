"""The PM-4324-CPS object dictionary, built from the register table (``map.csv``).

One builder serves the node, the EDS writer, the docs and ``pm4324 read --canopen``, so the
three cannot drift. Layout (evidence as in docs/canopen.md):

* 0x1000-0x1FFF, CiA 301 communication objects. The PDO parameters follow the evidenced
  PM-4324-CPS pattern: TPDO n (1..32) has mapping object 0x1A00 + n - 1 holding 0x3200:n and
  0x3201:n as INTEGER32 [M]/[D]. The COB-IDs of TPDO 5..32 are ours (``tpdo_default_cob_id``).
* 0x2000-0x2FFF, ours: one object per quantity of the register table, one sub-index per CT,
  Meter or main phase. Each entry carries the *raw number* of its register-table row (same
  type, scale and unit), so an SDO upload equals the Modbus register of the same second.
* 0x3200 kW and 0x3201 kWh, evidenced: 32 sub-indices, n = 4*(m-1)+k (k = 1..3 CT 3(m-1)+k,
  k = 4 Meter m total). Scaling is ours: 0x3200 in W, 0x3201 in 0.01 kWh (see ``values``).

The index of each table quantity is fixed below (the Modbus-only communication settings
included). A quantity a later table adds without a place here still gets an object, from
0x2800 on in table order, so a new register row never misses the CANopen side; give it a
fixed place here before relying on its index.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from functools import cache

from pm4324.protocols.canopen.codes import (
    COB_INVALID,
    COB_NO_RTR,
    EMCY_BASE,
    RPDO_BASES,
    SDO_RX_BASE,
    SDO_TX_BASE,
    SYNC_ID,
    TPDO_BASES,
)
from pm4324.protocols.canopen.objects import (
    ARRAY,
    FROM_REGISTER_TYPE,
    RECORD,
    VAR,
    DataType,
    Dictionary,
    Entry,
    Obj,
)
from pm4324.registers.table import Point, RegisterMap, Source, load_map, parse_source

N_TPDO, N_RPDO = 32, 4
MAX_MAPPED = 8  # mapping entries per PDO (8 x 8 bits fill a classic CAN frame)
KW_INDEX, KWH_INDEX = 0x3200, 0x3201
RELAY_INDEX = 0x2010
DEFAULT_HEARTBEAT_MS = 1000
DEFAULT_EVENT_TIMER_MS = 1000
DEFAULT_TPDO_TYPE = 254  # event-driven (manufacturer-specific event: a new snapshot)
DEFAULT_RPDO_TYPE = 255
DEVICE_TYPE = 0x0000_0000  # no CiA device profile
VENDOR_ID = 0x0000_0000  # ICP DAS's CiA vendor-ID is unknown to us [?]: 0 = "not assigned"
REVISION = 0x0001_0000  # major 1 (this CANopen behaviour), minor 0
PRODUCT_CODES = {"PM-4324": 4324, "PM-4324A": 43240}  # as the Modbus model code
ERROR_HISTORY = 8  # entries of 0x1003
#: 0x1010/0x1011 sub-indices: (sub, name, what reading 0x1010 answers: bit 0 saves on command,
#: bit 1 saves by itself). 1 and 2: the communication objects, saved on command; 3: the
#: application objects (0x2000..), which the settings file already saves on every change
STORE_SUBS = ((1, "Save all parameters", 1), (2, "Save communication parameters", 1),
              (3, "Save application parameters", 2))

#: fixed places of the register table's quantities. Measured: (base index, fields in order)
MAIN_FIELDS = ("v_ln", "v_ll", "thd_v_pct", "frequency_hz", "flags")
CT_FIELDS = ("v_rms", "i_rms", "p_w", "q_var", "s_va", "pf", "thd_v_pct", "thd_i_pct",
             "frequency_hz", "lead_lag", "flags")
METER_FIELDS = ("v_rms", "i_rms", "p_w", "q_var", "s_va", "s_arith_va", "s_vector_va", "pf",
                "frequency_hz", "lead_lag", "flags")
ENERGY_FIELDS = ("wh_import", "wh_export", "varh_q1", "varh_q2", "varh_q3", "varh_q4", "vah",
                 "varh_import", "varh_export")
MEASURED_BASES = {"main": (0x2100, MAIN_FIELDS), "ct": (0x2200, CT_FIELDS),
                  "meter": (0x2300, METER_FIELDS), "ct_energy": (0x2400, ENERGY_FIELDS),
                  "meter_energy": (0x2500, ENERGY_FIELDS)}
INTEGER_ENERGY_OFFSET = 0x80  # 0x2480 / 0x2580: the uint32 (0.01 kWh) energy counters
#: quantities without a CT/Meter/main number: source text -> (index, object name)
SCALAR_PLACES = {
    "setting:model": (0x2000, "model_code"),
    "const:firmware_bcd": (0x2001, "firmware_version"),
    "snapshot.seq": (0x2002, "snapshot_seq"),
    "snapshot.time": (0x2003, "snapshot_time"),
    "snapshot.duration_s": (0x2004, "snapshot_duration"),
    "alarm:active": (0x2005, "alarm_active"),
    "alarm:unacked": (0x2006, "alarm_unacked"),
    "setting:ct_input": (0x2007, "ct_input_type"),
    "command:energy_reset": (0x2011, "energy_reset"),
    "command:alarm_ack": (0x2012, "alarm_ack"),
    "setting:modbus.address": (0x2023, "modbus_address"),
    "setting:modbus.baud": (0x2024, "modbus_baud"),
    "setting:modbus.data_format": (0x2025, "modbus_data_format"),
    "setting:modbus.word_order": (0x2026, "modbus_word_order"),
}
#: numbered settings and the relays: (kind, group, field) -> index; sub-index = the number
ARRAY_PLACES = {
    ("relay", "", ""): RELAY_INDEX,
    ("setting", "meters", "ct_ratio"): 0x2020,
    ("setting", "meters", "wiring"): 0x2021,
    ("setting", "mains", "pt_ratio"): 0x2022,
    ("setting", "relays", "mode"): 0x2040,
    ("setting", "relays", "power_up"): 0x2041,
    ("setting", "relays", "combine"): 0x2042,
    **{("setting", "alarms", f): 0x2050 + i for i, f in enumerate((
        "relay", "quantity", "target_kind", "target_index", "comparison", "latch", "on_delay_s",
        "off_delay_s", "threshold", "band_low", "band_high", "hysteresis"))},
}
#: quantities a later table adds without a place above go here, in table (address) order
OVERFLOW_BASE = 0x2800
NODE_ID_INDEX, BITRATE_INDEX = 0x2030, 0x2031
PDO_KINDS = frozenset({"measured", "snapshot", "relay", "alarm"})


class LayoutError(ValueError):
    """A register-table source has no place in the object dictionary."""


# -- COB-IDs -------------------------------------------------------------------------------------


def tpdo_default_can_id(n: int, node_id: int) -> int:
    """Default CAN-ID of TPDO n (1..32) [ours beyond n = 4].

    TPDO 1..4 use the predefined connection set (0x180/0x280/0x380/0x480 + node-ID). TPDO n
    uses the TPDO (n-1) mod 4 function code of node-ID node + (n-1) div 4 (wrapping from 127
    to 1): the meter occupies the four TPDO identifiers of node-IDs node .. node+7.
    """
    k, j = (n - 1) % 4, (n - 1) // 4
    return TPDO_BASES[k] + (node_id - 1 + j) % 127 + 1


def rpdo_default_can_id(n: int, node_id: int) -> int:
    return RPDO_BASES[n - 1] + node_id


# -- communication objects -----------------------------------------------------------------------


def _var(index: int, name: str, dt: DataType, access: str, default, **kw) -> Obj:
    return Obj(index, name, VAR, (Entry(index, 0, name, dt, access, "comm", default=default, **kw),))


def _record(index: int, name: str, subs: list[Entry], object_type: int = RECORD, sub0_access="ro",
            sub0_default: int | None = None, sub0_high: int | None = None) -> Obj:
    highest = max(e.sub for e in subs)
    sub0 = Entry(index, 0, "Highest sub-index supported", DataType.UNSIGNED8, sub0_access, "comm",
                 default=highest if sub0_default is None else sub0_default,
                 low=0 if sub0_high is not None else None, high=sub0_high)
    return Obj(index, name, object_type, (sub0, *subs))


def _comm(index: int, sub: int, name: str, dt: DataType, access: str, default, **kw) -> Entry:
    return Entry(index, sub, name, dt, access, "comm", default=default, **kw)


def communication_objects(model: str = "PM-4324") -> list[Obj]:
    """The CiA 301 objects 0x1000..0x1FFF with their power-on defaults."""
    u8, u16, u32, vs = (DataType.UNSIGNED8, DataType.UNSIGNED16, DataType.UNSIGNED32,
                        DataType.VISIBLE_STRING)
    objs = [
        _var(0x1000, "Device type", u32, "ro", DEVICE_TYPE),
        _var(0x1001, "Error register", u8, "ro", 0, pdo=True),
        _var(0x1005, "COB-ID SYNC", u32, "rw", SYNC_ID),
        _var(0x1008, "Manufacturer device name", vs, "ro", f"{model}-CPS"),
        _var(0x1009, "Manufacturer hardware version", vs, "ro", "software emulation"),
        _var(0x100A, "Manufacturer software version", vs, "ro", "1.00"),
        _record(0x1003, "Pre-defined error field", [
            _comm(0x1003, n, f"Standard error field {n}", u32, "ro", 0,
                  description="error code (bits 0-15), where (bits 16-23: 1 main, 2 CT, 3 device, "
                  "4 RPDO, 5 node) and its number (bits 24-31), newest first")
            for n in range(1, ERROR_HISTORY + 1)
        ], object_type=ARRAY, sub0_access="rw", sub0_default=0),
        _var(0x100C, "Guard time", u16, "rw", 0, unit="ms"),
        _var(0x100D, "Life time factor", u8, "rw", 0),
        _record(0x1010, "Store parameters", [
            _comm(0x1010, s, name, u32, "rw", capability)
            for s, name, capability in STORE_SUBS
        ], object_type=ARRAY),
        _record(0x1011, "Restore default parameters", [
            _comm(0x1011, s, name, u32, "rw", int(s != 3))
            for s, name, _ in STORE_SUBS
        ], object_type=ARRAY),
        _var(0x1014, "COB-ID EMCY", u32, "ro", EMCY_BASE, node_relative=True),
        _var(0x1015, "Inhibit time EMCY", u16, "rw", 0, unit="100 us"),
        _var(0x1017, "Producer heartbeat time", u16, "rw", DEFAULT_HEARTBEAT_MS, unit="ms"),
        _record(0x1018, "Identity object", [
            _comm(0x1018, 1, "Vendor-ID", u32, "ro", VENDOR_ID),
            _comm(0x1018, 2, "Product code", u32, "ro", PRODUCT_CODES.get(model, 4324)),
            _comm(0x1018, 3, "Revision number", u32, "ro", REVISION),
            _comm(0x1018, 4, "Serial number", u32, "ro", 0),
        ]),
        _record(0x1200, "SDO server parameter", [
            _comm(0x1200, 1, "COB-ID client to server", u32, "ro", SDO_RX_BASE, node_relative=True),
            _comm(0x1200, 2, "COB-ID server to client", u32, "ro", SDO_TX_BASE, node_relative=True),
        ]),
    ]
    for n in range(1, N_RPDO + 1):
        index = 0x1400 + n - 1
        valid = 0 if n == 1 else COB_INVALID
        objs.append(_record(index, f"RPDO{n} communication parameter", [
            _comm(index, 1, "COB-ID used by RPDO", u32, "rw", valid | RPDO_BASES[n - 1],
                  node_relative=True),
            _comm(index, 2, "Transmission type", u8, "rw", DEFAULT_RPDO_TYPE),
        ]))
    for n in range(1, N_RPDO + 1):
        relays = [RELAY_INDEX << 16 | 1 << 8 | 8, RELAY_INDEX << 16 | 2 << 8 | 8] if n == 1 else []
        objs.append(_mapping(0x1600 + n - 1, f"RPDO{n} mapping parameter", relays))
    for n in range(1, N_TPDO + 1):
        index = 0x1800 + n - 1
        j = (n - 1) // 4
        objs.append(_record(index, f"TPDO{n} communication parameter", [
            _comm(index, 1, "COB-ID used by TPDO", u32, "rw",
                  COB_NO_RTR | TPDO_BASES[(n - 1) % 4] + j, node_relative=True),
            _comm(index, 2, "Transmission type", u8, "rw", DEFAULT_TPDO_TYPE),
            _comm(index, 3, "Inhibit time", u16, "rw", 0, unit="100 us"),
            _comm(index, 5, "Event timer", u16, "rw", DEFAULT_EVENT_TIMER_MS, unit="ms"),
        ]))
    for n in range(1, N_TPDO + 1):
        objs.append(_mapping(0x1A00 + n - 1, f"TPDO{n} mapping parameter",
                             [KW_INDEX << 16 | n << 8 | 0x20, KWH_INDEX << 16 | n << 8 | 0x20]))
    return objs


def _mapping(index: int, name: str, values: list[int]) -> Obj:
    subs = [
        _comm(index, s, f"Mapped object {s}", DataType.UNSIGNED32, "rw",
              values[s - 1] if s <= len(values) else 0)
        for s in range(1, MAX_MAPPED + 1)
    ]
    return _record(index, name, subs, sub0_access="rw", sub0_default=len(values),
                   sub0_high=MAX_MAPPED)


# -- manufacturer objects from the register table -------------------------------------------------


def _place(src: Source, point: Point) -> tuple[int | None, int, str]:
    """(index or None = not placed, sub-index, object name) of one table source."""
    if src.kind == "measured":
        base, names = MEASURED_BASES.get(src.group, (None, ()))
        name = f"{src.group}_{src.field}"
        integer = src.group.endswith("_energy") and point.type != "float32"
        if integer:
            name = f"{name}_{point.type.replace('uint', 'u')}"
        sub = 3 * (src.index - 1) + src.phase if src.phase else src.index
        if base is None or src.field not in names:
            return None, sub, name
        return base + names.index(src.field) + (INTEGER_ENERGY_OFFSET if integer else 0), sub, name
    if src.index:  # numbered settings, relays
        key = (src.kind, src.group, src.field)
        name = "relays" if src.kind == "relay" else f"{src.group}_{src.field}"
        return ARRAY_PLACES.get(key), src.index, name
    if src.text in SCALAR_PLACES:
        index, name = SCALAR_PLACES[src.text]
        return index, 0, name
    name = src.text.replace("setting:", "").replace(":", "_").replace(".", "_")
    return None, 0, name


def _chosen_points(register_map: RegisterMap) -> dict[tuple, list[Point]]:
    """Table rows grouped by what they carry; the first of each group is the one served.

    Settings, relays and commands: one entry per source (the writable register first). Measured
    values: one per source and register type (float32 and the uint32 energy counters both).
    """
    groups: dict[tuple, list[Point]] = defaultdict(list)
    for p in register_map.points:
        s = p.source
        if s.kind == "const" and s.field == "reserved":
            continue
        key = (s.text, p.type, p.scale) if s.kind in ("measured", "snapshot") else (s.text,)
        groups[key].append(p)
    for points in groups.values():
        # a register row before a coil carrying the same setting (relayK_mode, 0x1010/0x1011)
        points.sort(key=lambda p: (not p.writable, p.type == "float32", not p.evidenced,
                                   p.type == "bit"))
    return groups


def _point_entry(index: int, sub: int, point: Point) -> Entry:
    src = point.source
    access = "wo" if src.kind == "command" else "rw" if point.writable else "ro"
    low, high = (0, 1) if src.kind == "relay" else (point.minimum, point.maximum)
    mappable = src.kind in PDO_KINDS
    return Entry(index, sub, point.name, FROM_REGISTER_TYPE[point.type], access, "point",
                 pdo=mappable, low=low if point.writable else None,
                 high=high if point.writable else None, unit=point.unit, factor=point.scale,
                 description=point.description, point=point, source=src)


def _evidenced_objects() -> list[Obj]:
    objs = []
    for index, name, unit, factor, field, energy in (
        (KW_INDEX, "kW", "kW", 0.001, "p_w", ""),
        (KWH_INDEX, "kWh", "kWh", 0.01, "wh_import", "_energy"),
    ):
        subs = []
        for n in range(1, 33):
            m, k = (n - 1) // 4 + 1, (n - 1) % 4 + 1
            if k < 4:
                ct = 3 * (m - 1) + k
                src, label = parse_source(f"ct{energy}.{field}[{ct}]"), f"ct{ct}"
            else:
                src, label = parse_source(f"meter{energy}.{field}[{m}]"), f"meter{m}"
            what = "active power P, in W" if index == KW_INDEX else \
                "import active energy, in 0.01 kWh (rolls over to 0 at 2^31)"
            subs.append(Entry(index, n, label, DataType.INTEGER32, "ro", "kw" if energy == "" else "kwh",
                              pdo=True, unit=unit, factor=factor, source=src,
                              description=f"{label.replace('ct', 'CT').replace('meter', 'Meter ')}: "
                              f"{what}"))
        objs.append(_record(index, name, subs, object_type=ARRAY))
    return objs


def _canopen_setting_objects() -> list[Obj]:
    return [
        Obj(NODE_ID_INDEX, "canopen_node_id", VAR, (Entry(
            NODE_ID_INDEX, 0, "canopen_node_id", DataType.UNSIGNED8, "ro", "canopen",
            description="Active node-ID 1..127: settings file [canopen] node_id, or as an LSS "
            "master stored it"),)),
        Obj(BITRATE_INDEX, "canopen_bitrate", VAR, (Entry(
            BITRATE_INDEX, 0, "canopen_bitrate", DataType.UNSIGNED32, "ro", "canopen", unit="bit/s",
            description="Active bit rate: settings file [canopen] bitrate, or as an LSS master set it"),)),
    ]


def manufacturer_objects(register_map: RegisterMap) -> tuple[list[Obj], dict[Point, Entry]]:
    """Objects 0x2000.. from the table, and every table row -> the entry that carries it."""
    placed: dict[int, dict[int, Entry]] = defaultdict(dict)
    names: dict[int, str] = {}
    arrays: set[int] = set()
    aliases: dict[Point, Entry] = {}
    overflow: dict[str, int] = {}  # object name -> index, for quantities without a place
    for points in _chosen_points(register_map).values():
        first = points[0]
        index, sub, name = _place(first.source, first)
        if index is None:
            index = overflow.setdefault(name, OVERFLOW_BASE + len(overflow))
        if sub in placed[index]:
            raise LayoutError(f"{first.name} and {placed[index][sub].name} share 0x{index:04X}:{sub}")
        entry = _point_entry(index, sub, first)
        placed[index][sub] = entry
        names[index] = name
        if sub:
            arrays.add(index)
        for p in points:
            aliases[p] = entry
    objs = []
    for index, subs in placed.items():
        if index in arrays:
            objs.append(_record(index, names[index], [subs[s] for s in sorted(subs)],
                                object_type=ARRAY))
        else:
            objs.append(Obj(index, names[index], VAR, (replace(subs[0], name=names[index]),)))
    return objs + _evidenced_objects() + _canopen_setting_objects(), aliases


def build_dictionary(register_map: RegisterMap | None = None, model: str = "PM-4324") -> Dictionary:
    """The whole dictionary; ``model`` sets only the name and product code defaults."""
    rm = register_map or load_map()
    manufacturer, aliases = manufacturer_objects(rm)
    return Dictionary(communication_objects(model) + manufacturer, aliases)


@cache
def default_dictionary(model: str = "PM-4324") -> Dictionary:
    """The dictionary of the package's own register table (cached)."""
    return build_dictionary(None, model)
