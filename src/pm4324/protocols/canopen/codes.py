"""CiA 301 numbers: function codes, NMT states and commands, SDO abort and EMCY codes.

Plain constants, so a frame in a log can be matched to its meaning with a grep.
"""

from __future__ import annotations

from enum import IntEnum

# -- LSS (CiA 305)

LSS_MASTER_ID = 0x7E5  # master -> slaves
LSS_SLAVE_ID = 0x7E4  # slave -> master

# -- COB-ID function codes (predefined connection set, CiA 301 §7.3.3) -------------------------

NMT_ID = 0x000
SYNC_ID = 0x080
EMCY_BASE = 0x080
TPDO_BASES = (0x180, 0x280, 0x380, 0x480)
RPDO_BASES = (0x200, 0x300, 0x400, 0x500)
SDO_TX_BASE = 0x580  # server -> client
SDO_RX_BASE = 0x600  # client -> server
HEARTBEAT_BASE = 0x700

COB_INVALID = 0x8000_0000  # bit 31 of a PDO COB-ID: PDO does not exist / not valid
COB_NO_RTR = 0x4000_0000  # bit 30: no RTR allowed on this PDO
COB_EXTENDED = 0x2000_0000  # bit 29: 29-bit identifier (not supported: CAN 2.0A only)
COB_RESERVED_BITS = 0x1FFF_F800  # bits 11..28 must be 0 for an 11-bit identifier


def restricted_can_id(can_id: int) -> bool:
    """CAN-IDs a PDO or SYNC may not use (CiA 301 Table 3: NMT, SYNC/EMCY, SDO, heartbeat...)."""
    return (
        can_id == 0
        or 0x001 <= can_id <= 0x07F
        or 0x101 <= can_id <= 0x180
        or 0x581 <= can_id <= 0x5FF
        or 0x601 <= can_id <= 0x67F
        or 0x6E0 <= can_id <= 0x6FF
        or 0x701 <= can_id <= 0x7FF
    )


class NmtState(IntEnum):
    """NMT states as the heartbeat reports them."""

    INITIALISING = 0x00  # the boot-up message carries this
    STOPPED = 0x04
    OPERATIONAL = 0x05
    PRE_OPERATIONAL = 0x7F


class NmtCommand(IntEnum):
    START = 0x01
    STOP = 0x02
    ENTER_PRE_OPERATIONAL = 0x80
    RESET_NODE = 0x81
    RESET_COMMUNICATION = 0x82


class Abort(IntEnum):
    """SDO abort codes (CiA 301 Table 22) that this server sends."""

    TOGGLE = 0x0503_0000
    TIMEOUT = 0x0504_0000
    COMMAND = 0x0504_0001  # client/server command specifier not valid or unknown
    UNSUPPORTED_ACCESS = 0x0601_0000
    WRITE_ONLY = 0x0601_0001  # attempt to read a write-only object
    READ_ONLY = 0x0601_0002  # attempt to write a read-only object
    NO_OBJECT = 0x0602_0000  # object does not exist in the object dictionary
    NOT_MAPPABLE = 0x0604_0041
    PDO_LENGTH = 0x0604_0042  # number and length of mapped objects exceed the PDO length
    INCOMPATIBLE = 0x0604_0043  # general parameter incompatibility
    LENGTH = 0x0607_0010  # data type does not match, length of service parameter does not match
    LENGTH_HIGH = 0x0607_0012
    LENGTH_LOW = 0x0607_0013
    NO_SUB = 0x0609_0011  # sub-index does not exist
    VALUE_RANGE = 0x0609_0030
    VALUE_HIGH = 0x0609_0031
    VALUE_LOW = 0x0609_0032
    GENERAL = 0x0800_0000
    CANNOT_STORE = 0x0800_0020
    DEVICE_STATE = 0x0800_0022  # not possible in the present device state


class SdoAbort(Exception):
    """Raised by object access; the SDO server answers with ``code``."""

    def __init__(self, code: Abort | int, message: str = ""):
        self.code = int(code)
        super().__init__(message or f"SDO abort 0x{self.code:08X}")


class Emcy(IntEnum):
    """EMCY error codes (CiA 301 Table 21) this device sends."""

    RESET = 0x0000  # error reset / no error
    CURRENT_INPUT = 0x2100  # current, device input side: a CT input over range
    MAINS_OVER_VOLTAGE = 0x3110  # a voltage input over range
    MAINS_UNDER_VOLTAGE = 0x3120  # voltage loss on a main
    HARDWARE = 0x5000  # the ADC delivered invalid samples
    SOFTWARE = 0x6100  # internal software error
    PDO_LENGTH = 0x8210  # RPDO not processed due to length error
    LIFE_GUARD = 0x8130  # life guard error: the master's node guarding stopped


class ErrorBit(IntEnum):
    """Bits of the error register 0x1001."""

    GENERIC = 0x01
    CURRENT = 0x02
    VOLTAGE = 0x04
    COMMUNICATION = 0x10
    MANUFACTURER = 0x80
