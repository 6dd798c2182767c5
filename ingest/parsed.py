"""What parsing a landed file gives: its rows (good and bad) chunk by chunk, or a refusal."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

BAD_SCHEMA = {"line": pl.Int64, "field": pl.String, "reason": pl.String, "raw_text": pl.String}


@dataclass(frozen=True)
class KnownKeys:
    """The reference keys event rows are checked against, as loaded: devices, hubs, categories.

    An empty set means that reference is not loaded yet: its check is skipped (devices: the
    file is refused, `loader._check_devices`). Falsy when no device is known."""

    devices: frozenset[str] = frozenset()
    hubs: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.devices)


# What the validators take: the keys, or (tests, tools) just the device ids.
Known = KnownKeys | set[str] | frozenset[str]


def as_known(known: Known | None) -> KnownKeys | None:
    if known is None or isinstance(known, KnownKeys):
        return known
    return KnownKeys(devices=frozenset(known))


class FileRefused(Exception):
    """The whole file is refused: it stays in the landing zone and nothing of it is loaded."""


@dataclass
class ParseResult:
    good: pl.DataFrame  # contract fields typed, plus _line (and event_ts/event_date for event files)
    bad: pl.DataFrame  # line, field, reason, raw_text — one row per rejected line
    lines: int  # data lines in the file (header excluded)
    header: dict = field(default_factory=dict)  # the batch header, when the format has one
    extra_keys: dict[str, int] = field(default_factory=dict)  # JSON keys outside the contract -> lines carrying them
    extra_lines: pl.DataFrame | None = None  # (line, __extra) of the lines with keys outside the contract

    @property
    def reject_ratio(self) -> float:
        return self.bad.height / self.lines if self.lines else 0.0
