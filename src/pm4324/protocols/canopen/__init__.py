"""CANopen interface of the PM-4324-CPS: a CiA 301 slave over python-can (docs/canopen.md).

``od`` builds the object dictionary from the register table, ``eds`` writes it as a CiA 306
EDS, ``sdo``/``pdo``/``emcy`` are the services (sans I/O) and ``node.CanopenServer`` runs
them on a bus next to a running meter.
"""

from pm4324.protocols.canopen.node import CanopenBusError, CanopenServer
from pm4324.protocols.canopen.od import build_dictionary, default_dictionary, tpdo_default_can_id

__all__ = [
    "CanopenBusError",
    "CanopenServer",
    "build_dictionary",
    "default_dictionary",
    "tpdo_default_can_id",
]
