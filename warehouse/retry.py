"""The one bounded retry: a locked DuckDB file or an unreachable catalog is waited for a while,
then reported by name (the backends raise `WarehouseBusy` for exactly those cases)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WarehouseBusy(RuntimeError):
    """A transient reason the warehouse cannot be opened right now."""


class WarehouseLocked(WarehouseBusy):
    """Another process holds the DuckDB file."""


class WarehouseUnavailable(WarehouseBusy):
    """The DuckLake catalog (PostgreSQL) cannot be reached."""


def with_retry(
    attempt: Callable[[], T], what: str, attempts: int = 6, first_wait_s: float = 0.5, max_wait_s: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `attempt` until it stops raising WarehouseBusy, doubling the wait, at most `attempts`
    times; the last failure is re-raised with how long it was tried."""
    wait = first_wait_s
    for n in range(1, attempts + 1):
        try:
            return attempt()
        except WarehouseBusy as exc:
            if n == attempts:
                raise type(exc)(f"{what}: still failing after {attempts} attempts: {exc}") from exc
            sleep(wait)
            wait = min(wait * 2, max_wait_s)
    raise AssertionError("unreachable")
