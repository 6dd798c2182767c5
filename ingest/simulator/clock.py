"""Time helpers: the city's local calendar in UTC epoch seconds, and timestamp formatting.

Everything is generated as integer UTC epoch seconds ("true" time) and formatted at the
edge: device and validator clocks as local time with offset, gateways and the clearing
operator as UTC with `Z`.
"""

from __future__ import annotations

import zlib
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from ingest.contracts import CITY_TZ

TZ = ZoneInfo(CITY_TZ)
LOCAL_FMT = "%Y-%m-%dT%H:%M:%S%:z"
UTC_FMT = "%Y-%m-%dT%H:%M:%SZ"


def local_midnight_epoch(d: date) -> int:
    """UTC epoch seconds of local 00:00 on `d` (days are 23, 24 or 25 hours long)."""
    return int(datetime.combine(d, time(0), tzinfo=TZ).timestamp())


def day_bounds(d: date) -> tuple[int, int]:
    return local_midnight_epoch(d), local_midnight_epoch(d + timedelta(days=1))


def noon_offset(d: date) -> int:
    """UTC offset (seconds) at local noon; valid for every local time from 04:00 to 24:00."""
    off = datetime.combine(d, time(12), tzinfo=TZ).utcoffset()
    assert off is not None
    return int(off.total_seconds())


def local_seconds_to_epoch(d: date, seconds: np.ndarray) -> np.ndarray:
    """Local wall-clock seconds after midnight (04:00 or later) on `d` → UTC epoch seconds."""
    naive_midnight = (d - date(1970, 1, 1)).days * 86_400
    return naive_midnight + seconds.astype(np.int64) - noon_offset(d)


def fmt_local(col: str | pl.Expr) -> pl.Expr:
    e = pl.col(col) if isinstance(col, str) else col
    return (
        pl.from_epoch(e, time_unit="s")
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone(CITY_TZ)
        .dt.strftime(LOCAL_FMT)
    )


def fmt_utc(col: str | pl.Expr) -> pl.Expr:
    e = pl.col(col) if isinstance(col, str) else col
    return pl.from_epoch(e, time_unit="s").dt.strftime(UTC_FMT)


def local_iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, TZ).isoformat()


def utc_iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(UTC_FMT)


def rng_for(seed: int, day_index: int, stream: str) -> np.random.Generator:
    """One independent, reproducible stream per (seed, day, stream name).

    Seeding per day is what makes `--append` produce the same files as a one-shot run.
    """
    return np.random.default_rng(
        np.random.SeedSequence([seed & 0xFFFFFFFF, day_index + 100_000, zlib.crc32(stream.encode())])
    )


def easter(year: int) -> date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l = (32 + 2 * e + 2 * i - h - k) % 7  # noqa: E741
    m = (a + 11 * h + 22 * l) // 451
    month, day = divmod(h + l - 7 * m + 114, 31)
    return date(year, month, day + 1)


def public_holidays(year: int) -> dict[date, str]:
    """Dutch public holidays (the city's calendar); King's Day moves to the 26th on a Sunday."""
    e = easter(year)
    kings = date(year, 4, 27)
    if kings.weekday() == 6:
        kings = date(year, 4, 26)
    return {
        date(year, 1, 1): "New Year's Day",
        e: "Easter Sunday",
        e + timedelta(days=1): "Easter Monday",
        kings: "King's Day",
        date(year, 5, 5): "Liberation Day",
        e + timedelta(days=39): "Ascension Day",
        e + timedelta(days=49): "Whit Sunday",
        e + timedelta(days=50): "Whit Monday",
        date(year, 12, 25): "Christmas Day",
        date(year, 12, 26): "Boxing Day",
    }


def is_holiday(d: date) -> bool:
    return d in public_holidays(d.year)
