"""`pm4324 hub`: poll many PM-4324s (Modbus TCP, RTU, CANopen) into one history store."""

from pm4324.hub.config import HubConfig, MeterConfig, load_hub, parse_hub
from pm4324.hub.hub import Hub

__all__ = ["Hub", "HubConfig", "MeterConfig", "load_hub", "parse_hub"]
