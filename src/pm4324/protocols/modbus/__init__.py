"""Modbus TCP and RTU servers for the PM-4324, over a ``RegisterBackend``.

``pdu`` holds the sans-IO request handler shared by both transports, ``rtu`` the RS-485 framing
and serial server, ``tcp`` the asyncio TCP server.
"""

from pm4324.protocols.modbus.pdu import handle_pdu
from pm4324.protocols.modbus.rtu import RtuFramer, RtuServer, RtuTiming, crc16
from pm4324.protocols.modbus.tcp import TcpServer, parse_listen

__all__ = [
    "RtuFramer",
    "RtuServer",
    "RtuTiming",
    "TcpServer",
    "crc16",
    "handle_pdu",
    "parse_listen",
]
