"""`pm4324 hub HUB.toml`: poll the meters listed in HUB.toml and keep their history
(docs/hub.md). Ctrl-C or SIGTERM stops it after writing what it holds."""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("hub", help="poll many meters over Modbus/CANopen into one history",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("config", metavar="HUB.toml", help="the meters and the history (docs/hub.md)")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.add_argument("--http", type=_listen, nargs="?", const=("127.0.0.1", 8080), metavar="HOST:PORT",
                   help="serve the dashboard, the HTTP API and /metrics of every meter "
                   "(bare: 127.0.0.1:8080; docs/web.md)")
    p.set_defaults(func=run)
    return p


def _listen(text: str) -> tuple[str, int]:
    from pm4324.cli.cli import _listen as parse

    return parse(text)


def run(args: argparse.Namespace) -> int:
    import logging

    from pm4324.history import HistoryError, HistoryStore
    from pm4324.hub import Hub, load_hub

    config = load_hub(args.config)  # SettingsError: one line, exit 2 (cli.main)
    if not getattr(args, "verbose", False):
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        logging.getLogger("canopen").setLevel(logging.CRITICAL)
    try:
        store = HistoryStore.open(config.history, time_zone=config.time_zone or None,
                                  raw_days=config.raw_days)
    except HistoryError as exc:
        print(f"pm4324 hub: {exc}", file=sys.stderr)
        return 2
    lines = len({m.line for m in config.meters})
    print(f"Hub: {len(config.meters)} meters on {lines} lines; history {config.history} "
          f"(time zone {store.time_zone})", file=sys.stderr, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    hub = Hub(config, store, say=lambda text: print(text, file=sys.stderr, flush=True))
    mqtt = None
    if config.mqtt.enabled:  # every meter on MQTT too (docs/mqtt.md)
        from pathlib import Path

        from pm4324.mqtt.fleet import HubPublishers

        mqtt = HubPublishers(config.mqtt, [m.key for m in config.meters],
                             Path(config.base) / "mqtt-buffer")
        mqtt.start()
        hub.listeners.append(lambda key, snap: mqtt.offer(key, {**snap.to_dict(),
                                                                 **snap.alarms_dict()}))
        print(f"MQTT to {config.mqtt.host}:{config.mqtt.port} under "
              f"{config.mqtt.topic_prefix}/{config.mqtt.node_id or 'hub'}-<meter key>",
              file=sys.stderr, flush=True)
    backfill = _backfill(config, hub, store)
    try:
        web = _web(config, hub, args.http) if args.http else None
    except OSError as exc:
        print(f"pm4324 hub: {exc}", file=sys.stderr)
        if mqtt is not None:
            mqtt.stop()
        store.close()
        return 2
    try:
        hub.run(seconds=args.seconds, stop=stop)
    finally:
        if web is not None:
            web.stop_thread()
        if backfill is not None:
            backfill.stop()
        if mqtt is not None:
            mqtt.stop()
        store.close()
    print(f"Hub stopped after {hub.readings} readings", file=sys.stderr)
    return 0


def _web(config, hub, listen: tuple[str, int]):
    """Every meter's pages, API and /metrics from the hub's history (docs/web.md)."""
    from pm4324.history import HistoryStore
    from pm4324.web.server import WebServer, exposure_warning

    host, port = listen
    web = WebServer(None, host, port, keys=[m.key for m in config.meters],
                    history=HistoryStore.open(config.history, readonly=True))
    web.start_in_thread()
    hub.listeners.append(web.publish)
    hub.watchers.append(web.fleet.mark)
    print(f"Dashboard and HTTP API of {len(config.meters)} meters on {web.url} (read-only)",
          file=sys.stderr, flush=True)
    if warning := exposure_warning(host):
        print(warning, file=sys.stderr, flush=True)
    return web


def _backfill(config, hub, store):
    """Gaps of meters with a ``web`` URL are filled from their own history (docs/hub.md)."""
    urls = {m.key: m.web for m in config.meters if m.web}
    if not urls:
        return None
    from pm4324.hub.backfill import Backfiller

    backfill = Backfiller(store, {k: hub.writers[k].meter for k in urls}, urls, say=hub.say)
    hub.listeners.append(backfill.on_reading)
    backfill.start()
    return backfill
