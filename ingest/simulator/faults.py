"""Fault injection: which faults happen when, and how they reshape a day's deliveries.

Every fault kind has a rate (per file, per device-day, per transaction or per batch — see
`FAULT_UNITS`) and a *forced day*: on that day index (from the simulation start) the
kind happens at least once if its rate is above zero, so a 28-day tiny run holds every
kind. Decisions come from their own random streams, so changing fault rates never
changes the underlying city data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import polars as pl

from ingest.contracts import Contract

from .clock import rng_for

FaultRates = dict[str, float]

FAULT_UNITS: dict[str, str] = {
    "duplicate_event": "per event file: some rows re-sent in a `_retry` file (same day or next)",
    "duplicate_file": "per source and day: a byte-identical copy under another name (`_resent`)",
    "late_delivery": "per event file: rows after a gateway outage arrive 1–3 days later (`_backlog`)",
    "out_of_order": "per event file: rows not in time order",
    "clock_skew": "per locker and day: device clock off by 10 min – 6 h for 1–3 days",
    "corrupt_line": "per event file: one unparseable line",
    "wrong_type": "per event file: one line with a value of the wrong type",
    "truncated_file": "per day: a telemetry re-delivery cut mid-line (`_partial`), refused whole",
    "unknown_device": "per source and day: rows from a device missing in reference `devices`",
    "never_settled": "per transaction: never appears in a clearing batch",
    "late_settlement": "per transaction: cleared two days later (> 24 h)",
    "amount_mismatch": "per transaction: settled amount differs from the transaction",
    "settlement_without_transaction": "per clearing batch: a line for an unknown txn_id",
    "duplicate_settlement": "per clearing batch: a transaction settled twice in the batch",
}
FAULT_KINDS: tuple[str, ...] = tuple(FAULT_UNITS)

DEFAULT_FAULT_RATES: FaultRates = {
    "duplicate_event": 0.05,
    "duplicate_file": 0.04,
    "late_delivery": 0.03,
    "out_of_order": 0.05,
    "clock_skew": 0.002,
    "corrupt_line": 0.04,
    "wrong_type": 0.04,
    "truncated_file": 0.02,
    "unknown_device": 0.04,
    "never_settled": 0.004,
    "late_settlement": 0.01,
    "amount_mismatch": 0.004,
    "settlement_without_transaction": 0.05,
    "duplicate_settlement": 0.04,
}
FORCED_DAY: dict[str, int] = {k: 2 + i for i, k in enumerate(FAULT_KINDS)}  # days 2..15
MAX_LATE_DAYS = 3
MAX_SKEW_DAYS = 3
BAD_ROW_BUDGET = 0.04  # below every event contract's reject threshold (5 %)


def resolve_rates(user: dict | None) -> FaultRates:
    rates = dict(DEFAULT_FAULT_RATES)
    for k, v in (user or {}).items():
        if k not in rates:
            raise ValueError(f"unknown fault kind {k!r}; known: {', '.join(FAULT_KINDS)}")
        if not 0 <= float(v) <= 1:
            raise ValueError(f"fault rate {k}={v} must be within [0, 1]")
        rates[k] = float(v)
    return rates


def hits(rng: np.random.Generator, rates: FaultRates, kind: str, day_index: int, n: int, prefer: int | None = None) -> np.ndarray:
    """Which of `n` candidates get fault `kind` today."""
    rate = rates.get(kind, 0.0)
    out = rng.random(n) < rate
    if n and rate > 0 and day_index == FORCED_DAY[kind] and not out.any():
        out[prefer if prefer is not None else int(rng.integers(n))] = True
    return out


def skew_for_day(seed: int, rates: FaultRates, day_index: int, n_lockers: int, n_devices: int) -> np.ndarray:
    """Device clock offset (seconds) per telemetry device on a day; 0 = clock right."""
    shift = np.zeros(n_devices, dtype=np.int64)
    for d0 in range(max(0, day_index - MAX_SKEW_DAYS + 1), day_index + 1):
        r = rng_for(seed, d0, "faults:skew")
        for dev in np.flatnonzero(hits(r, rates, "clock_skew", d0, n_lockers)):
            length = int(r.integers(1, MAX_SKEW_DAYS + 1))
            s = int(r.choice(np.array([-1, 1])) * r.integers(600, 6 * 3600))
            if d0 + length > day_index:
                shift[dev] = s
    return shift


@dataclass
class OutFile:
    """One file as delivered: its rows (contract columns + private `_` columns) and faults."""

    contract: Contract
    gen_day: date
    delivery: date
    name: str
    rows: pl.DataFrame
    header: dict | None = None  # clearing batches
    copy_of: "OutFile | None" = None  # byte copy (duplicate_file, truncated_file)
    truncate_frac: float | None = None
    file_faults: list[tuple[str, str, int]] = field(default_factory=list)  # (kind, detail, rows)
    data: bytes | None = None  # rendered content, cached by the writer
    cut_line: int | None = None

    @property
    def relpath(self) -> str:
        return f"{self.contract.name}/{self.delivery:%Y-%m-%d}/{self.name}"

    @property
    def refused(self) -> bool:
        """A correct loader refuses this file whole (so its rows never count)."""
        return self.truncate_frac is not None


def _mark(rows: pl.DataFrame, i: int, kind: str) -> pl.DataFrame:
    at = pl.int_range(pl.len()) == i
    return rows.with_columns(
        _fault=pl.when(at).then(pl.lit(kind)).otherwise(pl.col("_fault")),
        _valid=pl.when(at).then(False).otherwise(pl.col("_valid")),
    )


def event_deliveries(
    contract: Contract,
    df: pl.DataFrame,
    stems: list[str],
    d: date,
    day_index: int,
    frng: np.random.Generator,
    rates: FaultRates,
    make_unknown: Callable[[pl.DataFrame, np.random.Generator], pl.DataFrame],
    allow_truncate: bool,
) -> list[OutFile]:
    """Split a day's rows into its files and inject the file-level and line-level faults."""
    ext = f".{contract.file_format}"
    # rows arrive grouped by file (stable within a file): slice instead of filtering
    counts = np.bincount(df["_file"].to_numpy(), minlength=len(stems))
    if df.height and not (np.diff(df["_file"].to_numpy()) >= 0).all():
        df = df.sort("_file", maintain_order=True)
    offs = np.r_[0, np.cumsum(counts)]
    parts = [df.slice(int(offs[k]), int(counts[k])) for k in range(len(stems))]
    sizes = np.array([p.height for p in parts])
    biggest = int(np.argmax(sizes)) if sizes.size else 0
    nf = len(stems)
    late = hits(frng, rates, "late_delivery", day_index, nf, biggest)
    ooo = hits(frng, rates, "out_of_order", day_index, nf, biggest)
    corrupt = hits(frng, rates, "corrupt_line", day_index, nf, biggest)
    wrong = hits(frng, rates, "wrong_type", day_index, nf, biggest)
    dup_ev = hits(frng, rates, "duplicate_event", day_index, nf, biggest)
    unknown = hits(frng, rates, "unknown_device", day_index, 1)[0]
    dup_file = hits(frng, rates, "duplicate_file", day_index, 1)[0]
    trunc = allow_truncate and hits(frng, rates, "truncated_file", day_index, 1)[0]

    files: list[OutFile] = []
    mains: dict[int, OutFile] = {}
    for k, rows in enumerate(parts):
        if rows.height == 0:
            continue
        stem = stems[k]
        if late[k]:
            lag = int(frng.integers(1, MAX_LATE_DAYS + 1))
            cutoff = int(np.quantile(rows["_t"].to_numpy(), frng.uniform(0.5, 0.9)))
            backlog = rows.filter(pl.col("_t") >= cutoff)
            rows = rows.filter(pl.col("_t") < cutoff)
            if backlog.height:
                files.append(
                    OutFile(contract, d, d + timedelta(days=lag), f"{stem}_backlog{ext}", backlog,
                            file_faults=[("late_delivery", f"{backlog.height} rows of {d} delivered {lag} day(s) late", backlog.height)])
                )
        budget = int(rows.height * BAD_ROW_BUDGET)
        for kind, flag in (("corrupt_line", corrupt[k]), ("wrong_type", wrong[k])):
            if flag and budget >= 1:
                clean = np.flatnonzero(rows["_fault"].is_null().to_numpy())
                if clean.size:
                    rows = _mark(rows, int(clean[frng.integers(clean.size)]), kind)
                    budget -= 1
        if unknown and k == biggest and budget >= 1:
            extra = make_unknown(rows, frng)
            i = int(frng.integers(0, rows.height + 1))
            rows = pl.concat([rows.slice(0, i), extra, rows.slice(i)])
        main_faults: list[tuple[str, str, int]] = []
        if ooo[k] and rows.height > 1:
            rows = rows[frng.permutation(rows.height)]
            main_faults.append(("out_of_order", "rows shuffled: not in time or sequence order", rows.height))
        main = OutFile(contract, d, d, f"{stem}{ext}", rows, file_faults=main_faults)
        files.append(main)
        mains[k] = main
        if dup_ev[k]:
            ok = np.flatnonzero((rows["_fault"].is_null() & rows["_valid"]).to_numpy())
            m = min(max(1, int(ok.size * 0.02)), 500, ok.size)
            if m:
                pick = np.sort(frng.choice(ok, size=m, replace=False))
                retry = rows[pick].with_columns(_fault=pl.lit("duplicate_event"))
                files.append(OutFile(contract, d, d + timedelta(days=int(frng.integers(0, 2))), f"{stem}_retry{ext}", retry))
    keys = sorted(mains)
    if dup_file and keys:
        src = mains[keys[int(frng.integers(len(keys)))]]
        files.append(
            OutFile(contract, d, d + timedelta(days=int(frng.integers(0, 2))), src.name.replace(ext, f"_resent{ext}"),
                    src.rows, copy_of=src,
                    file_faults=[("duplicate_file", f"byte-identical copy of {src.relpath}", src.rows.height)])
        )
    if trunc and keys:
        src = mains[keys[int(frng.integers(len(keys)))]]
        files.append(
            OutFile(contract, d, d, src.name.replace(ext, f"_partial{ext}"), src.rows, copy_of=src,
                    truncate_frac=float(frng.uniform(0.3, 0.9)),
                    file_faults=[("truncated_file", f"interrupted re-delivery of {src.relpath}: cut mid-line, no trailing "
                                  "newline; expected refused whole (its rows arrive complete in the original)", 0)])
        )
    return files
