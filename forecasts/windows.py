"""Delivery windows: split a day's staging units into the parts of the day when they are
picked up, from the hourly demand profile (`marts.neighbourhood_demand_hourly`).

A hub restocked once at dawn needs the whole day's units by 06:00; a hub restocked in
waves needs each wave's share before it starts. The plan therefore carries a `window`
column: one row per hub × category × day × window, whose units sum (exactly, by largest
remainder) to the day's newsvendor amount. The shares are the neighbourhood × category's
units per window over the last PROFILE_DAYS days on the same weekday; with too little
data, over all weekdays; with none (or no hourly mart), the plan keeps one `day` window.

The daily quantile is split, not re-optimised per window: the newsvendor amount protects
the day as a whole (the windows' uncertainties partly cancel), and a unit staged for the
morning still serves the evening.
"""

from __future__ import annotations

import duckdb
import polars as pl

from forecasts.planner import split_units
from warehouse.tables import table_exists

WINDOWS: tuple[tuple[str, int, int], ...] = (
    ("night", 0, 6), ("morning", 6, 12), ("afternoon", 12, 18), ("evening", 18, 24),
)
DAY = "day"
PROFILE_DAYS = 56
MIN_UNITS = 20  # a weekday profile needs at least this many units to be trusted


def window_of_hour_sql() -> str:
    return "case " + " ".join(f"when demand_hour < {hi} then '{n}'" for n, _, hi in WINDOWS) + " end"


def read_profile(con: duckdb.DuckDBPyConnection, as_of) -> pl.DataFrame:
    """neighbourhood_id, category, dow (ISO 1–7 or 0 = all days), window, share."""
    if not table_exists(con, "marts", "neighbourhood_demand_hourly"):
        return pl.DataFrame()
    sql = f"""
        with h as (
            select neighbourhood_id, category, isodow(demand_date) dow, {window_of_hour_sql()} "window",
                   -- exact decimal sums: a parallel DOUBLE sum can differ in the last bit between
                   -- runs, enough to flip a largest-remainder tie and change a re-run's plan bytes
                   sum(units::DECIMAL(18, 4)) units
            from marts.neighbourhood_demand_hourly
            where demand_date <= ? and demand_date > ?::DATE - {PROFILE_DAYS}
            group by all),
        both_ as (
            select * from h
            union all
            select neighbourhood_id, category, 0 dow, "window", sum(units) from h group by all)
        select neighbourhood_id, category, dow, "window",
               (units / nullif(sum(units) over (partition by neighbourhood_id, category, dow), 0))::DOUBLE "share",
               (sum(units) over (partition by neighbourhood_id, category, dow))::DOUBLE "day_units"
        from both_ order by all"""
    return con.execute(sql, [as_of, as_of]).pl()


def split_plan(plan: pl.DataFrame, profile: pl.DataFrame) -> pl.DataFrame:
    """Daily plan rows → window rows (`window`, `window_share`); units sum to the day's."""
    if plan.is_empty():
        return plan.with_columns(pl.lit(None, pl.String).alias("window"), pl.lit(None, pl.Float64).alias("window_share"))
    if profile.is_empty():
        return plan.with_columns(pl.lit(DAY).alias("window"), pl.lit(1.0).alias("window_share"))
    shares: dict[tuple[str, str, int], dict[str, float]] = {}
    for (nb, cat, dow), g in profile.group_by("neighbourhood_id", "category", "dow", maintain_order=True):
        if g["day_units"][0] is None or g["day_units"][0] < MIN_UNITS:
            continue
        shares[(nb, cat, dow)] = {w: float(s or 0.0) for w, s in zip(g["window"], g["share"])}
    names = [w[0] for w in WINDOWS]
    rows = []
    for r in plan.iter_rows(named=True):
        dow = r["plan_date"].isoweekday()
        sh = shares.get((r["neighbourhood_id"], r["category"], dow)) or shares.get((r["neighbourhood_id"], r["category"], 0))
        if not sh:
            rows.append({**r, "window": DAY, "window_share": 1.0})
            continue
        w = [sh.get(n, 0.0) for n in names]
        units, _ = split_units(int(r["units"]), w, [None] * len(w))
        total = sum(w) or 1.0
        for n, u, x in zip(names, units, w):
            f = x / total
            rows.append({**r, "units": u, "window": n, "window_share": round(f, 4),
                         "forecast_p50": round(r["forecast_p50"] * f, 4), "p10": round(r["p10"] * f, 4),
                         "p90": round(r["p90"] * f, 4)})
    order = {n: i for i, n in enumerate([*names, DAY])}
    out = pl.DataFrame(rows, schema={**plan.schema, "window": pl.String, "window_share": pl.Float64})
    return (out.with_columns(pl.col("window").replace_strict(order, default=99).alias("_w"))
            .sort("plan_date", "hub_id", "category", "_w").drop("_w"))
