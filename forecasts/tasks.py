"""The nightly series tasks: the demand series and the event calendar, turned into one
`SeriesTask` per series (history, days to forecast, its events and attendance).

Shared by the nightly run (run.py) and the warehouse backtest (evaluate.py), so that the
backtest replays exactly the tasks a night would fit.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from forecasts.calibration import Calibration
from forecasts.model import SeriesTask


def event_calendar(events: pl.DataFrame) -> pl.DataFrame:
    """One row per (neighbourhood, event day): holiday name and expected attendance."""
    if events.is_empty():
        return pl.DataFrame(schema={"neighbourhood_id": pl.String, "ds": pl.Date, "holiday": pl.String,
                                    "attendance": pl.Float64})
    e = events.filter(pl.col("venue_neighbourhood_id").is_not_null() & pl.col("start_date").is_not_null())
    return (
        e.with_columns(
            pl.col("venue_neighbourhood_id").cast(pl.String).alias("neighbourhood_id"),
            pl.date_ranges(pl.col("start_date").cast(pl.Date),
                           pl.coalesce(pl.col("end_date"), pl.col("start_date")).cast(pl.Date)).alias("ds"),
            # holidays by kind: the effect is learned across events of the same kind
            ("event_" + pl.coalesce(pl.col("kind"), pl.col("name"), pl.lit("event")).cast(pl.String)
             .str.to_lowercase().str.replace_all(r"[^a-z0-9]+", "_")).alias("holiday"),
            pl.col("expected_attendance").cast(pl.Float64).fill_null(0.0).alias("attendance"),
        )
        .explode("ds")
        .select("neighbourhood_id", "ds", "holiday", "attendance")
        .sort("neighbourhood_id", "ds", "holiday")
    )


def build_tasks(series: pl.DataFrame, classes: pl.DataFrame, calendar: pl.DataFrame,
                future: list[date], calibrate: bool = True,
                calibration: Calibration | None = None) -> list[SeriesTask]:
    kinds = dict(zip(classes["series_id"].to_list(), classes["kind"].to_list()))
    fut = np.array(future, dtype="datetime64[D]")
    att_by_nb: dict[str, dict[date, float]] = {}
    hol_by_nb: dict[str, list[tuple[str, date, date]]] = {}
    for nb, g in calendar.group_by("neighbourhood_id", maintain_order=True):
        nb = nb[0]
        daily = g.group_by("ds").agg(pl.col("attendance").sum()).sort("ds")
        att_by_nb[nb] = dict(zip(daily["ds"].to_list(), daily["attendance"].to_list()))
        hol_by_nb[nb] = [(h, d, d) for h, d in zip(g["holiday"].to_list(), g["ds"].to_list())]
    tasks: list[SeriesTask] = []
    for (sid,), g in series.group_by("series_id", maintain_order=True):
        nb = g["neighbourhood_id"][0]
        ds_list = g["ds"].to_list()
        att = att_by_nb.get(nb, {})
        first, last_f = ds_list[0], future[-1] if future else ds_list[-1]
        hols = tuple(h for h in hol_by_nb.get(nb, []) if first <= h[1] <= last_f)
        tasks.append(SeriesTask(
            series_id=sid,
            ds=np.array(ds_list, dtype="datetime64[D]"),
            y=g["y"].to_numpy().astype(float),
            future_ds=fut,
            kind=kinds.get(sid, "too_short"),
            events=hols,
            attendance_hist=np.array([att.get(d, 0.0) for d in ds_list]) if att else None,
            attendance_future=np.array([att.get(d, 0.0) for d in future]) if att else None,
            calibrate=calibrate,
            calibration=calibration,
        ))
    return tasks
