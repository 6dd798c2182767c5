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
        ('H1a','N1','North A','Mill Lane 3',51.512,-0.121), ('H1b','N1','North B','Church Street 40',51.508,-0.118),
        ('H2','N2','Centre','Market Square 1',51.501,-0.102), ('H3','N3','South','Riverside 17',51.489,-0.111))
        t(hub_id, neighbourhood_id, name, address, lat, lon)""")
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


def store_nights(con: duckdb.DuckDBPyConnection, medians: dict[date, float], horizon: int = 2) -> None:
    """Store a forecast and a staging plan for each night (as_of → N1's parcels median) with
    the nightly writer, and the pickups each hub saw in `marts.hub_utilisation_daily`:
    H1a 15, H1b 9, H2 meds 3 and H2 parcels 20 a day, H1a 30 on the last night's day."""
    from forecasts.planner import plan_staging
    from forecasts.run import FORECAST_SCHEMA, write_tables

    hubs = con.execute("select hub_id, neighbourhood_id from marts.dim_hubs").pl()
    cap = con.execute("select hub_id, category, capacity_units from marts.hub_capacity").pl()
    cats = con.execute("select category, under_cost, over_cost from marts.dim_categories").pl()
    for as_of, p50 in sorted(medians.items()):
        rows = []
        for k in range(1, horizon + 1):
            d = as_of + timedelta(days=k)
            for nb, cat, m in (("N1", "parcels", p50), ("N2", "meds", 2.0), ("N2", "parcels", 20.0)):
                rows.append({"as_of": as_of, "series_id": f"{nb}|{cat}", "neighbourhood_id": nb, "category": cat,
                             "forecast_date": d, "horizon": k, "kind": "smooth", "method": "civicflow", "mean": m,
                             "p10": m * 0.7, "p50": m, "p80": m * 1.2, "p90": m * 1.3, "p95": m * 1.4,
                             "calibration_scale": 1.0, "fallback_reason": None, "calibration": "calibrated"})
        fc = pl.DataFrame(rows, schema=FORECAST_SCHEMA)
        plan = plan_staging(fc.select("neighbourhood_id", "category", "forecast_date", "p10", "p50", "p80", "p90", "p95"),
                            hubs, cap, cats).with_columns(
            pl.lit("day").alias("window"), pl.lit(1.0).alias("window_share"), pl.lit("calibrated").alias("intervals"))
        write_tables(con, as_of, fc, plan)
    last = max(medians)
    pick = [(d, h, c, float(u)) for d in (last - timedelta(days=k) for k in range(len(medians) + 1))
            for h, c, u in (("H1a", "parcels", 30 if d == last else 15), ("H1b", "parcels", 9), ("H2", "meds", 3),
                            ("H2", "parcels", 20))]
    con.register("_p", pl.DataFrame(pick, schema=["activity_date", "hub_id", "category", "pickup_units"],
                                    orient="row").to_arrow())
    con.execute("create or replace table marts.hub_utilisation_daily as select * from _p")
    con.unregister("_p")
