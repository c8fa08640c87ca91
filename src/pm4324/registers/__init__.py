"""The Modbus register map: one table (``map.csv``), its codecs, the served image and docs.

Protocol servers see only ``backend.RegisterBackend``; ``MapBackend`` implements it over a
running meter. See docs/registers.md for the map itself.
"""

from pm4324.registers.backend import AccessError, ExceptionCode, MeterControl, RegisterBackend
from pm4324.registers.image import MapBackend, RegisterImage, build_image
from pm4324.registers.table import Point, RegisterMap, TableError, load_map

__all__ = [
    "AccessError",
    "ExceptionCode",
    "MapBackend",
    "MeterControl",
    "Point",
    "RegisterBackend",
    "RegisterImage",
    "RegisterMap",
    "TableError",
    "build_image",
    "load_map",
]
