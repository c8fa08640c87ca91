"""CANopen benchmark: SDO uploads per second, TPDO latency, and the bus load of the TPDOs.

Command (from the repository root)::

    .venv/bin/python bench/canopen_bench.py            # about 15 s
    .venv/bin/python bench/canopen_bench.py --netns    # also across processes (root only)

What it measures (results go to the `## CANopen` section of docs/benchmarks.md by hand):

* SDO uploads/s, in-process on python-can ``virtual``: python-canopen's ``RemoteNode``
  uploading 0x2200:1 (REAL32, expedited) in a loop, master and node in one process (so they
  share the GIL); and the node's own cost per request (``CanopenServer.handle`` called
  directly, answer sent to a bus nobody reads).
* With ``--netns``: the same master loop against a node in another process, over
  ``udp_multicast`` in a private network namespace created and removed here.
* TPDO latency: from the meter publishing a snapshot (its listeners called) to the frame
  put on the ``virtual`` bus (python-can stamps it at send), for TPDO 1 (first of the burst)
  and TPDO 32 (last), all 32 event-driven with the default mapping; p50 / p99 over
  ``--snapshots`` snapshots. Twice: with the Modbus register image rebuilt by another
  listener at the same time (in the publishing thread, as in `pm4324 run`; the two share
  the GIL), and with the node alone.
* Bus load (computed): 32 TPDOs of 8 bytes each per second, plus the 1 s heartbeat, as a
  share of each bit rate. A classic CAN 2.0A data frame with n data bytes has 47 + 8n bits
  plus at most floor((34 + 8n - 1) / 4) stuff bits: 111 bits nominal, 135 worst case at n = 8.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import can
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "protocols" / "canopen"))

from canopen_helpers import factory, object_dictionary, snapshot  # noqa: E402

from pm4324.config.settings import CanopenSettings, Settings  # noqa: E402
from pm4324.protocols.canopen import CanopenServer  # noqa: E402
from pm4324.registers.image import MapBackend  # noqa: E402

NODE = 5
BITRATES = (10_000, 20_000, 50_000, 125_000, 250_000, 500_000, 800_000, 1_000_000)


def frame_bits(n: int, worst: bool) -> int:
    bits = 47 + 8 * n
    return bits + ((34 + 8 * n - 1) // 4 if worst else 0)


def bus_load_table() -> str:
    rows = ["| Bit rate | 32 TPDOs + heartbeat, nominal | worst case (max stuffing) |",
            "|---|---|---|"]
    for rate in BITRATES:
        nominal = 32 * frame_bits(8, False) + frame_bits(1, False)
        worst = 32 * frame_bits(8, True) + frame_bits(1, True)
        rows.append(f"| {rate // 1000} kbit/s | {100 * nominal / rate:.2f} % | "
                    f"{100 * worst / rate:.2f} % |")
    return "\n".join(rows)


def _settings(channel: str) -> Settings:
    return replace(Settings(), canopen=CanopenSettings(node_id=NODE, interface="virtual",
                                                       channel=channel))


def sdo_in_process(n: int) -> dict[str, float]:
    import canopen

    channel = f"bench-{uuid.uuid4().hex[:8]}"
    s = _settings(channel)
    meter = factory.FakeMeter(s, snapshot(s))
    network = canopen.Network()
    network.NOTIFIER_CYCLE = 0.1
    network.connect(interface="virtual", channel=channel)
    remote = network.add_node(NODE, object_dictionary(NODE))
    with CanopenServer(meter, s):
        remote.sdo.upload(0x2200, 1)
        t0 = time.perf_counter()
        for _ in range(n):
            remote.sdo.upload(0x2200, 1)
        rate = n / (time.perf_counter() - t0)
    network.disconnect()

    # the node's own cost: handle() straight, no master, no thread switch
    bus = can.Bus(interface="virtual", channel=f"{channel}-sink")
    node = CanopenServer(meter, s, bus=bus)
    node.state = node.state.PRE_OPERATIONAL
    msg = can.Message(arbitration_id=0x600 + NODE, is_extended_id=False,
                      data=struct.pack("<BHB", 0x40, 0x2200, 1) + bytes(4))
    k = 20 * n
    t0 = time.perf_counter()
    for _ in range(k):
        node.handle(msg)
    per_request = (time.perf_counter() - t0) / k
    bus.shutdown()
    return {"uploads_per_s": rate, "node_us_per_request": per_request * 1e6}


class LazyBackend(MapBackend):
    """A register backend that builds its image only when asked (not in the listener)."""

    def _on_snapshot(self, snapshot) -> None:
        pass


def tpdo_latency(snapshots: int, lazy: bool) -> dict[str, list[float]]:
    channel = f"bench-{uuid.uuid4().hex[:8]}"
    s = _settings(channel)
    meter = factory.FakeMeter(s, snapshot(s))
    rx = can.Bus(interface="virtual", channel=channel)
    first, last = [], []
    backend = LazyBackend(meter) if lazy else None
    with CanopenServer(meter, s, backend=backend):
        rx.send(can.Message(arbitration_id=0, data=bytes([1, NODE]), is_extended_id=False))
        _drain_until(rx, 0x180 + NODE + 7, 3.0)  # entering operational: the first burst
        for seq in range(8, 8 + snapshots):
            snap = snapshot(s, seq)
            t0 = time.time()  # the virtual bus stamps each frame with time.time() at send
            meter.publish(snap)
            t_first = _drain_until(rx, 0x180 + NODE, 2.0)
            t_last = _drain_until(rx, 0x480 + NODE + 7, 2.0)  # TPDO 32
            first.append((t_first - t0) * 1e3)
            last.append((t_last - t0) * 1e3)
    rx.shutdown()
    return {"tpdo1_ms": first, "tpdo32_ms": last}


def _drain_until(bus: can.BusABC, cob: int, timeout: float) -> float:
    """The send time stamp of the next frame ``cob``."""
    deadline = time.perf_counter() + timeout
    while (left := deadline - time.perf_counter()) > 0:
        msg = bus.recv(left)
        if msg is not None and msg.arbitration_id == cob:
            return msg.timestamp
    raise TimeoutError(f"no frame 0x{cob:03X}")


def sdo_across_processes(n: int) -> float | None:
    """Uploads/s with the node in another process over udp_multicast, in a private netns."""
    if os.geteuid() != 0:
        print("--netns needs root; skipped", file=sys.stderr)
        return None
    ns = f"pm4324-bench-{uuid.uuid4().hex[:6]}"
    ip = ["ip", "netns", "exec", ns]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    slave = None
    try:
        for args in (("link", "set", "lo", "up"), ("route", "add", "224.0.0.0/4", "dev", "lo")):
            subprocess.run([*ip, "ip", *args], check=True)
        helper = ROOT / "tests" / "protocols" / "canopen" / "slave_helper.py"
        slave = subprocess.Popen([*ip, sys.executable, str(helper), "--node", str(NODE),
                                  "--speed", "1"], stdout=subprocess.PIPE, text=True)
        ready = threading.Event()
        threading.Thread(target=lambda: [ready.set() for line in slave.stdout if "ready" in line],
                         daemon=True).start()
        if not ready.wait(30):
            raise RuntimeError("slave did not start")
        out = subprocess.run([*ip, sys.executable, __file__, "--sdo-client", str(n)],
                             capture_output=True, text=True, timeout=120, check=True)
        return float(out.stdout.strip().splitlines()[-1])
    finally:
        if slave is not None:
            slave.terminate()
            slave.wait(30)
        subprocess.run(["ip", "netns", "del", ns])


def sdo_client(n: int) -> None:
    """The master half of ``--netns`` (run inside the namespace): print uploads/s."""
    import canopen

    network = canopen.Network()
    network.NOTIFIER_CYCLE = 0.1
    network.connect(interface="udp_multicast", channel="239.74.163.2")
    remote = network.add_node(NODE, object_dictionary(NODE))
    remote.sdo.upload(0x2200, 1)
    t0 = time.perf_counter()
    for _ in range(n):
        remote.sdo.upload(0x2200, 1)
    print(n / (time.perf_counter() - t0))
    network.disconnect()


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--uploads", type=int, default=5000)
    p.add_argument("--snapshots", type=int, default=200)
    p.add_argument("--netns", action="store_true", help="also measure across processes")
    p.add_argument("--sdo-client", type=int, help=argparse.SUPPRESS)  # used by --netns
    args = p.parse_args()
    if args.sdo_client:
        sdo_client(args.sdo_client)
        return

    sdo = sdo_in_process(args.uploads)
    print(f"SDO expedited uploads, in-process virtual bus: {sdo['uploads_per_s']:.0f}/s; "
          f"node cost {sdo['node_us_per_request']:.1f} us/request "
          f"(= {1e6 / sdo['node_us_per_request']:.0f}/s)")
    if args.netns:
        rate = sdo_across_processes(args.uploads)
        if rate is not None:
            print(f"SDO expedited uploads, two processes over udp_multicast: {rate:.0f}/s")
    for lazy, label in ((False, "with the Modbus image rebuilt meanwhile"),
                        (True, "node alone (no image rebuild)")):
        lat = tpdo_latency(args.snapshots, lazy)
        for key, values in lat.items():
            print(f"{key}, {label}: p50 {statistics.median(values):.3f} ms, "
                  f"p99 {_pct(values, 99):.3f} ms, max {max(values):.3f} ms (n = {len(values)})")
    print()
    print(bus_load_table())


if __name__ == "__main__":
    main()
