"""Helpers of the CANopen tests: the snapshot factory, a frame recorder, the master's OD.

Imported by name (pytest puts this directory on sys.path). Waits are on conditions with
timeouts (``FrameLog.wait``), never on sleeps.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache

import can
import numpy as np
import snapshot_factory as factory  # tests/registers, on pytest's pythonpath

from pm4324.protocols.canopen.eds import render_eds
from pm4324.protocols.canopen.od import default_dictionary

NODE = 5
WAIT = 3.0  # seconds: the bound on waiting for any frame


@dataclass(frozen=True)
class Frame:
    t: float
    cob: int
    data: bytes


class FrameLog:
    """Records every frame on a channel (from its own bus) and waits for frames."""

    def __init__(self, channel: str):
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.frames: list[Frame] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.bus.recv(0.05)
            if msg is not None:
                with self._cond:
                    self.frames.append(Frame(time.monotonic(), msg.arbitration_id, bytes(msg.data)))
                    self._cond.notify_all()

    def send(self, cob: int, data: bytes = b"", **kw) -> None:
        kw.setdefault("is_extended_id", False)
        self.bus.send(can.Message(arbitration_id=cob, data=data, **kw))

    def since(self, start: int, cob: int | None = None) -> list[Frame]:
        with self._cond:
            return [f for f in self.frames[start:] if cob is None or f.cob == cob]

    def mark(self) -> int:
        with self._cond:
            return len(self.frames)

    def wait(self, pred: Callable[[list[Frame]], bool], start: int = 0,
             timeout: float = WAIT) -> list[Frame]:
        """Frames since ``start`` once ``pred`` holds for them; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self.frames[start:]):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; frames: {self.frames[start:][-20:]}")
                self._cond.wait(left)
            return list(self.frames[start:])

    def count(self, cob: int, n: int, start: int = 0, timeout: float = WAIT) -> list[Frame]:
        frames = self.wait(lambda fs: sum(f.cob == cob for f in fs) >= n, start, timeout)
        return [f for f in frames if f.cob == cob]

    def none(self, cob: int, start: int, quiet: float = 0.3) -> None:
        """Assert that no frame with ``cob`` comes within ``quiet`` seconds."""
        deadline = time.monotonic() + quiet
        with self._cond:
            while (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            assert not [f for f in self.frames[start:] if f.cob == cob]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.bus.shutdown()


@cache
def object_dictionary(node: int):
    from canopen.objectdictionary.eds import import_eds

    return import_eds(io.StringIO(render_eds(default_dictionary())), node)


def clean(snap):
    """``snap`` with every quality flag cleared (no EMCY condition)."""
    return replace(
        snap,
        ct=replace(snap.ct, flags=np.zeros(len(snap.ct.flags), dtype=int)),
        meter=replace(snap.meter, flags=np.zeros(len(snap.meter.flags), dtype=int)),
        main=replace(snap.main, flags=np.zeros(len(snap.main.flags), dtype=int)),
    )


def snapshot(settings, seq: int = 7):
    """The factory's snapshot for ``seq`` (distinct values everywhere), flags cleared."""
    return clean(factory.make_snapshot(settings, seq=seq))


def publish(meter, seq: int, ct_flags=None, main_flags=None):
    """A new second: ``snapshot(seq)``, with some CT or main flags set ({number: flags})."""
    snap = snapshot(meter.settings, seq)
    if ct_flags:
        flags = np.array(snap.ct.flags)
        for k, f in ct_flags.items():
            flags[k - 1] = int(f)
        snap = replace(snap, ct=replace(snap.ct, flags=flags))
    if main_flags:
        flags = np.array(snap.main.flags)
        for k, f in main_flags.items():
            flags[k - 1] = int(f)
        snap = replace(snap, main=replace(snap.main, flags=flags))
    meter.publish(snap)
    return snap
