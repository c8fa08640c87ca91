"""Small pieces the benchmarks share (Linux): a process's CPU time, reading exactly n bytes
from a socket, stopping a server process, the table of ms CPU per meter-second. Imported as
``bench_util`` (a script's own folder is on its path)."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (utime + stime from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes; ConnectionError when the peer closes first."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not ended within ``timeout`` seconds; reaped either way."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def print_ms_table(first_column: str, ms: dict[str, list[float]]) -> None:
    """A Markdown table of ms CPU per meter-second: min, median and its inverse per row."""
    print(f"| {first_column} | min | median | meter-s per CPU-s (median) |")
    print("|---|---:|---:|---:|")
    for name, values in ms.items():
        med = statistics.median(values)
        print(f"| {name} | {min(values):.3f} | {med:.3f} | {1000 / med:.0f} |")
