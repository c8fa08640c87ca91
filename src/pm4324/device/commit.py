"""The committer: one worker thread that makes the meter's state durable.

Why a thread: a commit ends in ``fdatasync``, and neither the protocol servers' event loop
nor a CANopen callback may stall on the disk. ``request()`` returns a future at once; the
worker commits everything the meter holds at the moment it starts (so requests that
arrive while a commit runs share the next one: group commit) and resolves each future with
True (durable) or False (the save failed; the meter's NOT_SAVED status says so). A
protocol server answers a write only when its future is True, and gives up after
``registers.backend.ACK_WAIT_S`` (docs/energy-store.md, "Acknowledged means durable").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 5.0  # bound on the last commit at shutdown


class Committer:
    """Runs ``commit()`` (returns True when durable) in a thread, batching requests."""

    def __init__(self, commit: Callable[[], bool]):
        self._commit = commit
        self._cond = threading.Condition()
        self._waiting: list[Future[bool]] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="pm4324-commit", daemon=True)
        self._thread.start()

    def request(self) -> Future[bool]:
        """A future that is True once everything the meter holds now is on disk."""
        future: Future[bool] = Future()
        with self._cond:
            if self._stopping:
                future.set_result(False)
                return future
            self._waiting.append(future)
            self._cond.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if not self._waiting:
                    return
                batch, self._waiting = self._waiting, []
            try:
                durable = bool(self._commit())
            except Exception:  # a bug, not a disk problem: report it, keep the meter up
                log.exception("commit failed")
                durable = False
            for future in batch:
                future.set_result(durable)

    def close(self) -> None:
        """Finish the requests already made, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(CLOSE_WAIT_S)
