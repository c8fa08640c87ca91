"""System test: slave and master in two processes, over python-can ``udp_multicast``.

The processes share a private network namespace that the test creates and removes (with
``lo`` up and a multicast route on it), so nothing leaves the machine and nothing else on
the host hears the group. Creating a namespace needs root (CI runs as root); without it, or
without ``ip netns``, the test is skipped and says why.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
GROUP = "239.74.163.2"
NODE = 7
LIMIT = 60.0  # seconds: the bound on the whole test


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace (CI runs as root)")
    if shutil.which("ip") is None:
        pytest.skip("the `ip` command (iproute2) is not installed")
    name = f"pm4324-test-{uuid.uuid4().hex[:8]}"
    made = _ip("netns", "add", name)
    if made.returncode != 0:
        pytest.skip(f"`ip netns add` failed: {made.stderr.strip()}")
    try:
        for args in (("link", "set", "lo", "up"), ("link", "set", "lo", "multicast", "on"),
                     ("route", "add", "224.0.0.0/4", "dev", "lo")):
            r = _ip("netns", "exec", name, "ip", *args)
            assert r.returncode == 0, r.stderr
        yield name
    finally:
        _ip("netns", "del", name)


def _watch(proc: subprocess.Popen, text: str) -> tuple[threading.Event, list[str]]:
    """Set the event when ``text`` is a line of stdout; keep draining stdout and stderr
    (a full pipe would block the process)."""
    found, errors = threading.Event(), []

    def out() -> None:
        for line in proc.stdout:
            if line.strip() == text:
                found.set()

    def err() -> None:
        errors.extend(proc.stderr)

    for target in (out, err):
        threading.Thread(target=target, daemon=True).start()
    return found, errors


def test_master_and_slave_in_two_processes(netns):
    exec_ = ["ip", "netns", "exec", netns, sys.executable]
    common = ["--interface", "udp_multicast", "--channel", GROUP, "--node", str(NODE)]
    slave = subprocess.Popen([*exec_, str(HERE / "slave_helper.py"), *common, "--speed", "10"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, errors = _watch(slave, "ready")
    try:
        assert ready.wait(30), "the slave did not start: " + "".join(errors)[-3000:]
        master = subprocess.run([*exec_, str(HERE / "master_helper.py"), *common],
                                capture_output=True, text=True, timeout=LIMIT)
        assert master.returncode == 0, master.stderr[-3000:]
        out = json.loads(master.stdout.strip().splitlines()[-1])
    finally:
        slave.terminate()
        try:
            slave.wait(30)
        except subprocess.TimeoutExpired:
            slave.send_signal(signal.SIGUSR1)  # slave_helper dumps every thread's stack
            try:
                slave.wait(2)
            except subprocess.TimeoutExpired:
                slave.kill()
                slave.wait(5)
    assert slave.returncode == 0, "".join(errors)[-3000:]
    assert out["state"] in ("PRE-OPERATIONAL", "OPERATIONAL")
    assert out["name"] == "PM-4324A-CPS" and out["product"] == 43240
    assert out["all_tpdos"], f"TPDOs seen: {sorted(out['tpdos'], key=int)}"
    assert out["stopped"] == "STOPPED"
    read = out["read"]
    assert read["model"] == "PM-4324A" and read["seq"] is not None
    assert [m["meter"] for m in read["meters"]] == [1, 8]
    # the building draws power on Meter 1: the TPDO of its total (TPDO 4) says so too
    assert read["meters"][0]["p_w"] > 0 and out.get("tpdo4_measured", 0) > 0
