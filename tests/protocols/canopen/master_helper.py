"""System-test helper: a python-canopen master that checks a PM-4324-CPS node and prints JSON.

Run by test_system_netns.py in the same network namespace as slave_helper.py. It waits for
the node's heartbeat, reads identity objects, switches the node to operational, collects
one TPDO of each of the 32 (decoded through the EDS), reads the meter with
``pm4324 read --canopen``'s function, stops the node and prints what it saw.
"""

from __future__ import annotations

import argparse
import io
import json
import threading
import time

import canopen
from canopen.objectdictionary.eds import import_eds

from pm4324.client.canopen import read_canopen
from pm4324.protocols.canopen.eds import render_eds
from pm4324.protocols.canopen.od import default_dictionary


def check(args: argparse.Namespace) -> dict:
    out: dict = {}
    t0 = time.monotonic()
    network = canopen.Network()
    network.NOTIFIER_CYCLE = 0.1  # quicker disconnect
    network.connect(interface=args.interface, channel=args.channel)
    try:
        node = network.add_node(args.node, import_eds(io.StringIO(render_eds(default_dictionary())),
                                                      args.node))
        node.sdo.RESPONSE_TIMEOUT = 1.0
        out["state"] = node.nmt.wait_for_heartbeat(10)
        out["t_heartbeat"] = round(time.monotonic() - t0, 3)
        out["name"] = node.sdo[0x1008].raw
        out["product"] = node.sdo[0x1018][2].raw
        node.tpdo.read()
        out["t_tpdo_read"] = round(time.monotonic() - t0, 3)
        seen: dict[int, tuple[int, int]] = {}
        done = threading.Event()
        measured = threading.Event()  # TPDO 4 (Meter 1 total) with a measured value

        def on_tpdo(m, n):
            seen[n] = (m[0].raw, m[1].raw)
            if len(seen) == 32:
                done.set()
            # before the slave's first measured second (its first step may include compiling
            # the metering kernels) the TPDOs carry the "no value" pattern INT32_MIN
            if n == 4 and m[0].raw != -(2**31) and not measured.is_set():
                out["tpdo4_measured"] = m[0].raw
                measured.set()

        for n in range(1, 33):
            node.tpdo[n].add_callback(lambda m, n=n: on_tpdo(m, n))
        t0 = time.monotonic()
        node.nmt.state = "OPERATIONAL"
        out["all_tpdos"] = done.wait(10)
        out["tpdo_s"] = round(time.monotonic() - t0, 3)
        out["tpdos"] = {str(n): v for n, v in seen.items()}
        measured.wait(20)
        out["read"] = read_canopen(args.interface, args.channel, args.node, [1, 8])
        out["t_read"] = round(time.monotonic() - t0, 3)
        node.nmt.state = "STOPPED"
        out["stopped"] = node.nmt.wait_for_heartbeat(5)
    finally:
        network.disconnect()
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--interface", default="udp_multicast")
    p.add_argument("--channel", default="239.74.163.2")
    p.add_argument("--node", type=int, default=7)
    print(json.dumps(check(p.parse_args())))


if __name__ == "__main__":
    main()
