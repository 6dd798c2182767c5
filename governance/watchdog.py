"""Deadlines for running queries, kept by one thread for the whole process.

A `threading.Timer` per query starts a thread per query, and starting a thread waits for it to
run: about 2 ms per query on a busy 2-core machine, a fifth of the gateway's latency budget.
Here arming a deadline is a heap push. A callback runs on the watchdog thread while it holds the
lock, so once `disarm` returns the callback has either run already or never will (a pooled
connection is never interrupted after its query has handed it back).
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable


class Watchdog:
    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, Callable[[], None]] = {}
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, callback: Callable[[], None]) -> int:
        """Call `callback` in `seconds` unless disarmed first; returns the token to disarm it."""
        deadline = time.monotonic() + seconds
        with self._cv:
            token = next(self._tokens)
            self._armed[token] = callback
            heapq.heappush(self._heap, (deadline, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="query-watchdog", daemon=True)
                self._thread.start()
            elif self._heap[0][1] == token:  # the earliest deadline changed: wake the thread
                self._cv.notify()
        return token

    def disarm(self, token: int) -> None:
        with self._cv:
            self._armed.pop(token, None)

    def _loop(self) -> None:
        with self._cv:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][0] <= now or self._heap[0][1] not in self._armed):
                    _, token = heapq.heappop(self._heap)
                    callback = self._armed.pop(token, None)
                    if callback is not None:
                        try:
                            callback()
                        except Exception:  # a failing callback must not stop every later deadline
                            pass
                self._cv.wait(self._heap[0][0] - now if self._heap else None)


WATCHDOG = Watchdog()
# A forked child has no watchdog thread (only the forking thread survives a fork): start afresh.
os.register_at_fork(after_in_child=WATCHDOG._reset)
