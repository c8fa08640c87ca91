"""`pm4324 run` as a user meets it: ports that cannot be opened, a closed stdout."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SETTINGS = Path(__file__).resolve().parents[2] / "src/pm4324/data/building-settings.toml"


@pytest.fixture
def settings(tmp_path) -> Path:
    """A copy of the building's settings: its state file goes to tmp_path/var."""
    path = tmp_path / "s.toml"
    shutil.copy(SETTINGS, path)
    return path


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pm4324.cli.cli", "run", *args],
                          capture_output=True, text=True, timeout=timeout)


def _error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    return r.stderr.splitlines()[-1]


def test_missing_serial_device(settings):
    r = run("--settings", str(settings), "--rtu", "/dev/ttyUSB-none", "--no-modbus")
    assert _error_line(r) == ("pm4324: error: serial device /dev/ttyUSB-none does not exist "
                              "(ls /dev/ttyUSB* /dev/ttyS* lists them)")


def test_serial_device_is_a_directory(settings, tmp_path):
    r = run("--settings", str(settings), "--rtu", str(tmp_path), "--no-modbus")
    assert _error_line(r) == f"pm4324: error: {tmp_path} is a directory, not a serial device"


def test_listen_port_taken(settings):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run("--settings", str(settings), "--listen", f"127.0.0.1:{port}")
    assert _error_line(r) == (f"pm4324: error: 127.0.0.1:{port} is already in use (another "
                              "pm4324 run?): stop that program or give --listen another HOST:PORT")


def test_listen_on_an_address_this_host_lacks(settings):
    r = run("--settings", str(settings), "--listen", "192.0.2.1:5020")  # TEST-NET-1
    assert _error_line(r) == ("pm4324: error: this host has no address 192.0.2.1: give --listen "
                              "one of its own addresses, e.g. 127.0.0.1:5020")


def _restored_second(settings: Path) -> int:
    r = run("--settings", str(settings), "--seconds", "1", "--no-modbus", "--speed", "50")
    assert r.returncode == 0, r.stderr
    return int(re.search(r"restored commit \d+, second (-?\d+)", r.stderr).group(1))


def head_1(settings, *extra: str) -> tuple[str, int, str]:
    """`pm4324 run ... | head -1`: the first line, then stdout closed as `head` closes it;
    the meter's exit code and stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "pm4324.cli.cli", "run", "--settings",
                             str(settings), *extra, "--no-modbus", "--speed", "20",
                             "--seconds", "400"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        proc.stdout.close()  # what `head -1` does after its line
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return first, proc.returncode, err


def test_closed_stdout_stops_the_meter_cleanly_with_energy_saved(settings):
    """`pm4324 run --json | head -1`: the meter ends like any Unix filter, no traceback."""
    first, rc, err = head_1(settings, "--json")
    assert first.startswith('{"seq": 0,')
    assert rc == 0
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    second = _restored_second(settings)
    assert 0 <= second < 399  # saved, and it stopped long before --seconds


@pytest.mark.skipif(os.name != "posix", reason="POSIX pipes")
def test_closed_stdout_of_the_table_too(settings):
    first, rc, err = head_1(settings)
    assert first.startswith("PM-4324")
    assert rc == 0 and "Traceback" not in err, err


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: BLAS has one thread anyway")
def test_run_keeps_blas_to_one_thread(settings):
    """OpenBLAS's pool woke every second and spun (bench/run_cpu_bench.py: 60 -> 8 ms CPU per
    meter-second on 2 cores); `run` limits it to one thread."""
    probe = ("import sys; from pm4324.cli.cli import main; "
             f"rc = main(['run', '--settings', {str(settings)!r}, '--seconds', '1', "
             "'--speed', '50', '--no-modbus', '--json']); "
             "from threadpoolctl import threadpool_info; "
             "print(rc, sorted({i['num_threads'] for i in threadpool_info() "
             "if i['user_api'] == 'blas'}), file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.stderr.splitlines()[-1] == "0 [1]", r.stderr
