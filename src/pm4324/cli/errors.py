"""Why a port could not be opened, in one sentence a user can act on.

`run` (serving Modbus RTU/TCP) and `read` (a Modbus RTU client) meet the same operating
system errors; the bare errno text ("[Errno 22] Invalid argument") says neither which device
nor what to do.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path


def os_error_of(exc: BaseException) -> OSError | None:
    """The OSError inside ``exc`` (pyserial wraps it in SerialException with errno first)."""
    if isinstance(exc, OSError):
        return exc
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError):
        return cause
    if exc.args and isinstance(exc.args[0], int):
        return OSError(exc.args[0], os.strerror(exc.args[0]))
    return None


def serial_problem(device: str, exc: BaseException | None, line: str = "") -> str:
    """Why serial ``device`` cannot be used (``line``: e.g. "19200 E81", for EINVAL)."""
    path = Path(device)
    if not path.exists():
        return f"serial device {device} does not exist (ls /dev/ttyUSB* /dev/ttyS* lists them)"
    if path.is_dir():
        return f"{device} is a directory, not a serial device"
    err = os_error_of(exc) if exc is not None else None
    code = err.errno if err is not None else None
    if code in (errno.EACCES, errno.EPERM):
        return (f"no permission to open {device} (add the user to its group, often "
                f"'dialout': ls -l {device})")
    if code == errno.EBUSY:
        return f"{device} is busy: another program holds it open"
    if code in (errno.ENOTTY, errno.EINVAL):
        setting = f" {line}" if line else " this line setting"
        return (f"{device} does not accept{setting} (it is not a serial port, or a "
                "pseudo-terminal that cannot set parity/stop bits)")
    reason = (err.strerror if err is not None and err.strerror else str(exc or "unknown error"))
    return f"cannot open serial device {device}: {reason}"


def listen_problem(host: str, port: int, exc: OSError) -> str:
    """Why the Modbus TCP server cannot listen on ``host:port``."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return f"--listen {where}: no such host or address ({exc.strerror})"
    if exc.errno == errno.EADDRINUSE:
        return (f"{where} is already in use (another pm4324 run?): stop that program or give "
                "--listen another HOST:PORT")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"this host has no address {host}: give --listen one of its own addresses, "
                "e.g. 127.0.0.1:5020")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"no permission to listen on {where} (ports below 1024 need privileges): "
                "use a port from 1024, e.g. 5020")
    return f"cannot listen on {where}: {exc.strerror or exc}"
