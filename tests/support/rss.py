"""Peak memory of this process (where the tests run the gateway's servers, in threads) while
something runs — e.g. a client in another process reading a large answer."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psutil


def peak_rss_growth(run: Callable[[], None]) -> int:
    """Bytes the resident set grew by at its peak while `run()` ran, sampled every 5 ms."""
    me = psutil.Process()
    base = me.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], me.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return peak[0] - base
