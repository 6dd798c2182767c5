"""Synthetic marts for the forecast tests: small, seeded, built with SQL on real DuckDB."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

AS_OF = date(2024, 6, 30)


def event_days(start: date, n_days: int, every: int = 14, offset: int = 13) -> list[date]:
    return [start + timedelta(days=k) for k in range(offset, n_days + 30, every)]


def smooth_series(n: int, rng: np.random.Generator, base: float = 30.0, weekly_amp: float = 8.0,
                  event_idx: set[int] | None = None, lift: float = 40.0) -> np.ndarray:
    t = np.arange(n)
    mu = base + weekly_amp * np.sin(2 * np.pi * t / 7)
    if event_idx:
        for i in event_idx:
            if 0 <= i < n:
                mu[i] += lift
    return rng.poisson(np.maximum(mu, 0.1)).astype(float)


def build_city(db_path: Path, n_days: int = 150, seed: int = 7) -> duckdb.DuckDBPyConnection:
    rng = np.random.default_rng(seed)
    start = AS_OF - timedelta(days=n_days - 1)
    days = [start + timedelta(days=k) for k in range(n_days)]
    ev_days = event_days(start, n_days)  # offset 13: one falls on the 3rd horizon day
    ev_idx = {(d - start).days for d in ev_days}
    rows = []

    def add(nb: str, cat: str, y: np.ndarray, first: int = 0) -> None:
        for k in range(first, n_days):
            d = days[k]
            is_ev = nb == "N1" and d in ev_days
            rows.append((nb, cat, d, float(y[k]), is_ev, 20000 if is_ev else 0))

    add("N1", "parcels", smooth_series(n_days, rng, event_idx=ev_idx))
    add("N1", "groceries", smooth_series(n_days, rng, base=12, weekly_amp=4))
    add("N2", "parcels", smooth_series(n_days, rng, base=20, weekly_amp=6))
    add("N2", "meds", (rng.random(n_days) < 0.15) * rng.integers(1, 4, n_days))  # intermittent
    add("N3", "parcels", smooth_series(n_days, rng, base=10, weekly_amp=3), first=n_days - 10)  # too short
    add("N3", "meds", np.zeros(n_days))  # all zero
    demand = pl.DataFrame(rows, schema={"neighbourhood_id": pl.String, "category": pl.String,
                                        "demand_date": pl.Date, "units": pl.Float64,
                                        "is_event_day": pl.Boolean, "event_attendance": pl.Int64}, orient="row")
    events = pl.DataFrame({
        "event_id": [f"E{i:03d}" for i in range(len(ev_days))],
        "name": [f"Match {i}" for i in range(len(ev_days))],
        "kind": ["match"] * len(ev_days),
        "venue_neighbourhood_id": ["N1"] * len(ev_days),
        "start_date": ev_days, "end_date": ev_days,
        "expected_attendance": [20000] * len(ev_days),
    })
    con = duckdb.connect(str(db_path))
    con.execute("create schema if not exists marts")
    con.register("_demand", demand.to_arrow())
    con.execute("""create table marts.neighbourhood_demand_daily as
        select neighbourhood_id::VARCHAR neighbourhood_id, category::VARCHAR category, demand_date::DATE demand_date,
               units::DOUBLE units, is_event_day::BOOLEAN is_event_day, event_attendance::BIGINT event_attendance
        from _demand""")
    con.register("_events", events.to_arrow())
    con.execute("""create table marts.dim_events as select event_id, name, kind, venue_neighbourhood_id,
        start_date::TIMESTAMP start_ts, (end_date + 1)::TIMESTAMP end_ts, start_date::DATE start_date,
        end_date::DATE end_date, expected_attendance::BIGINT expected_attendance from _events""")
    con.execute("""create table marts.dim_hubs as select * from (values
        ('H1a','N1','North A'), ('H1b','N1','North B'), ('H2','N2','Centre'), ('H3','N3','South'))
        t(hub_id, neighbourhood_id, name)""")
    con.execute("""create table marts.dim_neighbourhoods as select * from (values
        ('N1','Northfield',5000,51.51,-0.12), ('N2','Old Town',4000,51.50,-0.10), ('N3','Southbank',3000,51.49,-0.11))
        t(neighbourhood_id, name, population, lat, lon)""")
    con.execute("""create table marts.hub_capacity as select hub_id, neighbourhood_id, category,
        capacity_units::BIGINT capacity_units from (values
        ('H1a','N1','parcels',40), ('H1b','N1','parcels',20), ('H1a','N1','groceries',30), ('H1b','N1','groceries',30),
        ('H2','N2','parcels',100), ('H2','N2','meds',10), ('H3','N3','parcels',5), ('H3','N3','meds',10))
        t(hub_id, neighbourhood_id, category, capacity_units)""")
    con.execute("""create table marts.dim_categories as select * from (values
        ('parcels','Parcels',3.0,1.0), ('groceries','Groceries',1.0,1.0), ('meds','Medicines',9.0,1.0))
        t(category, name, under_cost, over_cost)""")
    con.unregister("_demand")
    con.unregister("_events")
    return con
