"""System-test helper: a simulated PM-4324A meter with its CANopen slave on a python-can bus.

Run by test_system_netns.py inside a private network namespace::

    python slave_helper.py --interface udp_multicast --channel 239.74.163.2 --node 7 --speed 10

Prints ``ready`` once the node has sent its boot-up message, then measures one second and
pauses 1/``speed`` s, again and again, until SIGTERM or SIGINT. (Its own loop rather than
``Meter.run``: that one does not yield to the event loop while it runs behind its pace, and
a loaded CI machine would then never see the SIGTERM.)
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import signal
from dataclasses import replace

from pm4324.config.settings import CanopenSettings, Settings
from pm4324.device.meter import Meter
from pm4324.protocols.canopen import CanopenServer
from pm4324.sources.scenario_parse import load_scenario
from pm4324.sources.simulator import SimulatorSource


async def serve(args: argparse.Namespace) -> None:
    settings = replace(Settings(), canopen=CanopenSettings(
        node_id=args.node, interface=args.interface, channel=args.channel))
    meter = Meter(settings, SimulatorSource(load_scenario(None), settings))
    server = CanopenServer(meter, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    print("ready", flush=True)
    try:  # one second of measurement, then a pause that always yields to the loop
        while not stop.is_set():
            meter.step()
            try:
                await asyncio.wait_for(stop.wait(), 1.0 / args.speed)
            except TimeoutError:
                pass
    finally:
        await server.stop()


def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a hang shows its stacks
    p = argparse.ArgumentParser()
    p.add_argument("--interface", default="udp_multicast")
    p.add_argument("--channel", default="239.74.163.2")
    p.add_argument("--node", type=int, default=7)
    p.add_argument("--speed", type=float, default=10.0)
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
