"""Batch expectations: each partition (event date) of an event source judged as a whole.

The row suite (`ingest/expectations.py`) checks what each row may hold, and after quarantine
every landed row holds it. What it cannot see is a day that is wrong as a whole while each of
its rows is valid: a tenth of the usual volume (files lost on the way), every amount at the
contract's maximum, one kind of reading gone, a source whose newest events are days old. Here
DuckDB reduces each checked date to one profile row (its row count against the source's own
history, the declared daily means, medians and shares) and Great Expectations validates
that small frame against the bands the contract declares.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

import duckdb

from ingest.contracts import VOLUME_HISTORY_DAYS, VOLUME_MIN_HISTORY, Contract
from ingest.expectations import ExpectationOutcome, _gx, run_suite, shown_value

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd

VOLUME_COLUMN = f"rows_vs_{VOLUME_HISTORY_DAYS}_day_median"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# A day with fewer rows than this is not judged by its means, medians and shares (NULL in the
# profile): a tiny city's event day of 16 scans, all event passes, is no sign of a fault.
DAILY_STATS_MIN_ROWS = 20


def _stat_columns(contract: Contract) -> dict[str, str]:
    """Profile column → the SQL aggregate over one date's rows that fills it."""
    out: dict[str, str] = {}
    for f in contract.fields:
        col = _quoted(f.name)
        if f.daily_mean is not None:
            out[f"mean_{f.name}"] = f"avg({col})"
        if f.daily_median is not None:
            out[f"median_{f.name}"] = f"median({col})"
        for value, _ in f.daily_min_share:
            literal = "'" + value.replace("'", "''") + "'"
            out[f"share_{f.name}_{value}"] = f"avg(CASE WHEN {col} = {literal} THEN 1.0 ELSE 0.0 END)"
    return {name: f"CASE WHEN count(*) >= {DAILY_STATS_MIN_ROWS} THEN {sql} END" for name, sql in out.items()}


def profile_frame(con: duckdb.DuckDBPyConnection, contract: Contract, dates: list[str]) -> pd.DataFrame:
    """One row per checked date: its rows, how many earlier partitions of the last
    VOLUME_HISTORY_DAYS days there are and their median row count, the ratio of the two (NULL
    with fewer than VOLUME_MIN_HISTORY earlier partitions: nothing to judge by), the table's
    latest event date, and the contract's daily statistics."""
    stats = "".join(f", {sql} AS {_quoted(name)}" for name, sql in _stat_columns(contract).items())
    return con.execute(
        f"""WITH daily AS (SELECT event_date, count(*) AS n FROM {contract.table} GROUP BY 1),
            history AS (
                SELECT d.event_date, d.n,
                       (SELECT count(*) FROM daily h WHERE h.event_date < d.event_date
                            AND h.event_date >= d.event_date - INTERVAL {VOLUME_HISTORY_DAYS} DAY) AS history_days,
                       (SELECT median(h.n) FROM daily h WHERE h.event_date < d.event_date
                            AND h.event_date >= d.event_date - INTERVAL {VOLUME_HISTORY_DAYS} DAY) AS history_median
                FROM daily d WHERE d.event_date::VARCHAR IN (SELECT unnest(?))),
            stats AS (SELECT event_date{stats} FROM {contract.table}
                      WHERE event_date::VARCHAR IN (SELECT unnest(?)) GROUP BY event_date)
        SELECT h.event_date::TIMESTAMP AS event_date, h.n AS rows, h.history_days, h.history_median,
               (SELECT max(event_date) FROM daily)::TIMESTAMP AS latest_event_date,
               CASE WHEN h.history_days >= {VOLUME_MIN_HISTORY} THEN h.n / h.history_median END AS {_quoted(VOLUME_COLUMN)},
               s.* EXCLUDE (event_date)
        FROM history h JOIN stats s USING (event_date) ORDER BY h.event_date""",
        [dates, dates],
    ).df()


@dataclass(frozen=True)
class DailyBand:
    column: str  # of the profile frame
    low: float | None
    high: float | None
    description: str


def daily_bands(contract: Contract) -> list[DailyBand]:
    """The per-day bands the contract declares, one per profile column it checks."""
    bands = []
    if contract.volume_band is not None:
        bands.append(DailyBand(VOLUME_COLUMN, *contract.volume_band,
                               f"A day's rows over the median of the source's previous {VOLUME_HISTORY_DAYS} days."))
    for f in contract.fields:
        if f.daily_mean is not None:
            bands.append(DailyBand(f"mean_{f.name}", *f.daily_mean, f"The day's mean {f.name}, within the contract's band."))
        if f.daily_median is not None:
            bands.append(DailyBand(f"median_{f.name}", *f.daily_median, f"The day's median {f.name}, within the contract's band."))
        for value, share in f.daily_min_share:
            bands.append(DailyBand(f"share_{f.name}_{value}", share, None, f"Share of the day's rows with {f.name} = {value}."))
    return bands


def profile_suite(contract: Contract, run_day: date | None = None) -> gx.ExpectationSuite:
    """The contract's batch expectations over a profile frame (one row a date)."""
    gx = _gx()
    suite = gx.ExpectationSuite(name=f"raw_{contract.name}_partitions")
    for b in daily_bands(contract):
        suite.add_expectation(gx.expectations.ExpectColumnValuesToBeBetween(
            column=b.column, min_value=b.low, max_value=b.high, description=b.description))
    if run_day is not None and contract.fresh_within_days is not None:
        oldest = datetime.combine(run_day - timedelta(days=contract.fresh_within_days), datetime.min.time())
        # The source's latest event, not the latest of the dates checked: a late backlog file
        # delivered alone is on time if the source's own days are.
        suite.add_expectation(gx.expectations.ExpectColumnMaxToBeBetween(
            column="latest_event_date", min_value=oldest,
            description=f"The source's latest event date, at most {contract.fresh_within_days} day(s) before the run's day {run_day}."))
    return suite


def _offending_days(frame: pd.DataFrame, band: DailyBand) -> str:
    """`2026-02-09: 0.1` for each date whose value is outside the band."""
    values = frame[["event_date", band.column]].dropna()
    column = values[band.column]
    outside = (column < (band.low if band.low is not None else float("-inf"))) | (
        column > (band.high if band.high is not None else float("inf")))
    bad = values[outside]
    return ", ".join(f"{d:%Y-%m-%d}: {shown_value(float(v))}" for d, v in zip(bad["event_date"], bad[band.column]))


def validate_partitions(
    con: duckdb.DuckDBPyConnection, contract: Contract, dates: list[str], run_day: date | None = None
) -> list[ExpectationOutcome]:
    """The batch expectations of the checked dates; none for a reference table or no dates."""
    if contract.reference or not dates:
        return []
    frame = profile_frame(con, contract, dates)
    if frame.empty:
        return []
    outcomes = run_suite(frame, lambda: profile_suite(contract, run_day), unit="days")
    bands = {b.column: b for b in daily_bands(contract)}
    return [
        replace(o, observed=_offending_days(frame, bands[o.column])) if not o.success and o.column in bands else o
        for o in outcomes
    ]
