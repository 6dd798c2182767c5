"""Demand series: read the mart, one zero-filled daily series per neighbourhood × category,
and a classification that decides which model each series gets.

Classification follows Syntetos–Boylan: the average demand interval (ADI, periods per
non-zero demand) above 1.32 marks a series as intermittent — Prophet's Gaussian likelihood
handles many-zero series badly (DESIGN.md traps), so those go to a Croston-type method.
"""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import polars as pl

SMOOTH = "smooth"
INTERMITTENT = "intermittent"
TOO_SHORT = "too_short"

ADI_THRESHOLD = 1.32
MIN_HISTORY_DAYS = 28

DEMAND_SQL = """
select neighbourhood_id, category, demand_date, units, is_event_day, event_attendance
from marts.neighbourhood_demand_daily
where demand_date <= ?
order by neighbourhood_id, category, demand_date
"""

EVENTS_SQL = """
select event_id, name, kind, venue_neighbourhood_id, start_date, end_date, expected_attendance
from marts.dim_events
order by start_date, event_id
"""


def series_id_of(neighbourhood_id: str, category: str) -> str:
    return f"{neighbourhood_id}|{category}"


def last_demand_date(con: duckdb.DuckDBPyConnection) -> date | None:
    row = con.execute("select max(demand_date) from marts.neighbourhood_demand_daily").fetchone()
    return row[0] if row else None


def read_demand(con: duckdb.DuckDBPyConnection, as_of: date) -> pl.DataFrame:
    """The mart up to and including `as_of` (never later: a backfill must not see the future)."""
    return con.execute(DEMAND_SQL, [as_of]).pl()


def read_events(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    return con.execute(EVENTS_SQL).pl()


def build_series(demand: pl.DataFrame, as_of: date | None = None) -> pl.DataFrame:
    """Long frame (series_id, neighbourhood_id, category, ds, y) on a complete daily grid.

    The mart is zero-filled already, but a forecast must not trust that: a missing day
    would silently shift seasonal-naive lags. Each series runs from its first date to
    `as_of` (or the global last date), missing days filled with 0.
    """
    if demand.is_empty():
        return pl.DataFrame(
            schema={"series_id": pl.String, "neighbourhood_id": pl.String, "category": pl.String,
                    "ds": pl.Date, "y": pl.Float64}
        )
    d = demand.select(
        pl.col("neighbourhood_id").cast(pl.String),
        pl.col("category").cast(pl.String),
        pl.col("demand_date").cast(pl.Date).alias("ds"),
        pl.col("units").cast(pl.Float64).fill_null(0.0).alias("y"),
    )
    end = as_of or d["ds"].max()
    spans = d.group_by("neighbourhood_id", "category").agg(pl.col("ds").min().alias("start"))
    grid = spans.with_columns(
        pl.date_ranges("start", pl.lit(end), interval="1d").alias("ds")
    ).explode("ds").drop("start")
    agg = d.group_by("neighbourhood_id", "category", "ds").agg(pl.col("y").sum())
    out = (
        grid.join(agg, on=["neighbourhood_id", "category", "ds"], how="left")
        .with_columns(
            pl.col("y").fill_null(0.0).clip(lower_bound=0.0),
            (pl.col("neighbourhood_id") + "|" + pl.col("category")).alias("series_id"),
        )
        .select("series_id", "neighbourhood_id", "category", "ds", "y")
        .sort("series_id", "ds")
    )
    return out


def classify_values(y: np.ndarray, min_history: int = MIN_HISTORY_DAYS,
                    adi_threshold: float = ADI_THRESHOLD) -> str:
    """smooth / intermittent / too_short for one series' values (oldest first); missing
    values (NaN) are not periods of the history."""
    y = np.asarray(y, dtype=float)
    y = y[np.isfinite(y)]
    n = len(y)
    if n < min_history:
        return TOO_SHORT
    nonzero = int(np.count_nonzero(y > 0))
    if nonzero == 0:
        return INTERMITTENT
    adi = n / nonzero
    return INTERMITTENT if adi > adi_threshold else SMOOTH


def classify_series(series: pl.DataFrame, min_history: int = MIN_HISTORY_DAYS,
                    adi_threshold: float = ADI_THRESHOLD) -> pl.DataFrame:
    """Per series: n_obs, zero share, ADI, CV² of non-zero sizes and the class."""
    stats = (
        series.group_by("series_id", maintain_order=True)
        .agg(
            pl.col("neighbourhood_id").first(),
            pl.col("category").first(),
            pl.len().alias("n_obs"),
            (pl.col("y") > 0).sum().alias("n_nonzero"),
            pl.col("y").filter(pl.col("y") > 0).mean().alias("nz_mean"),
            pl.col("y").filter(pl.col("y") > 0).std().alias("nz_std"),
        )
        .with_columns(
            (1 - pl.col("n_nonzero") / pl.col("n_obs")).alias("zero_share"),
            pl.when(pl.col("n_nonzero") > 0)
            .then(pl.col("n_obs") / pl.col("n_nonzero"))
            .otherwise(None)
            .alias("adi"),
            ((pl.col("nz_std") / pl.col("nz_mean")) ** 2).alias("cv2"),
        )
        .with_columns(
            pl.when(pl.col("n_obs") < min_history).then(pl.lit(TOO_SHORT))
            .when(pl.col("n_nonzero") == 0).then(pl.lit(INTERMITTENT))
            .when(pl.col("adi") > adi_threshold).then(pl.lit(INTERMITTENT))
            .otherwise(pl.lit(SMOOTH))
            .alias("kind")
        )
        .drop("nz_mean", "nz_std")
        .sort("series_id")
    )
    return stats
