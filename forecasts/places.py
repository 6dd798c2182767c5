"""Names and places for the plan operations reads: hub and neighbourhood names and where the
hub is, joined onto the plan rows, key columns first, headers that carry their units.

Where the hub is comes from `marts.dim_hubs` (its street address, latitude and longitude,
from the hubs reference file); the neighbourhood's centroid (`marts.dim_neighbourhoods`)
rides along for the map's neighbourhood discs only.

The warehouse table `forecasts.staging_plan` keeps its machine names; only the files for
people (CSV, workbook, report) use the headers below.
"""

from __future__ import annotations

import duckdb
import polars as pl

from forecasts.windows import DAY, WINDOWS

WINDOW_ORDER: dict[str, int] = {n: i for i, n in enumerate([*(w[0] for w in WINDOWS), DAY])}
WINDOW_HOURS: dict[str, str] = {n: f"{lo:02d}:00–{hi:02d}:00" for n, lo, hi in WINDOWS} | {DAY: "00:00–24:00"}

PLACE_SCHEMA: dict[str, pl.DataType] = {
    "hub_id": pl.String, "hub_name": pl.String, "hub_address": pl.String, "lat": pl.Float64, "lon": pl.Float64,
    "neighbourhood_id": pl.String, "neighbourhood_name": pl.String,
    "neighbourhood_lat": pl.Float64, "neighbourhood_lon": pl.Float64,
}
# the map's, not a plan row's: with_places leaves them out
CENTROID = ("neighbourhood_lat", "neighbourhood_lon")

# plan column → (header for people, kind); kind drives the workbook's number format
HEADERS: dict[str, tuple[str, str]] = {
    "plan_date": ("plan date", "date"),
    "hub_id": ("hub", "text"),
    "hub_name": ("hub name", "text"),
    "neighbourhood_name": ("neighbourhood", "text"),
    "category": ("category", "text"),
    "window": ("delivery window", "text"),
    "window_hours": ("window hours (local)", "text"),
    "units": ("units to stage (units)", "int"),
    "model_units": ("units the model proposed (units)", "int"),
    "override_reason": ("override reason", "text"),
    "forecast_p50": ("median demand (units)", "float"),
    "p10": ("demand p10 (units)", "float"),
    "p90": ("demand p90 (units)", "float"),
    "capacity_units": ("hub capacity (units)", "int"),
    "cap_reason": ("capped by", "text"),
    "quantile": ("service level staged for (%)", "pct"),
    "hub_share": ("hub share of neighbourhood (%)", "pct"),
    "window_share": ("window share of day (%)", "pct"),
    "neighbourhood_units": ("neighbourhood units (units)", "int"),
    "under_cost": ("cost per unit short (EUR)", "eur"),
    "over_cost": ("cost per unit hauled back (EUR)", "eur"),
    "intervals": ("interval source", "text"),
    "neighbourhood_id": ("neighbourhood id", "text"),
    "hub_address": ("hub address", "text"),
    "lat": ("hub latitude (°)", "coord"),
    "lon": ("hub longitude (°)", "coord"),
}
KEY_ORDER = ("plan_date", "hub_id", "category", "window")


def read_places(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """One row per hub (PLACE_SCHEMA). A warehouse without `dim_neighbourhoods`, or made
    before hubs had an address and coordinates, still gets what it has; the rest is NULL."""
    cols = {(t, c) for t, c in con.execute(
        "select table_name, column_name from information_schema.columns where table_schema = 'marts' "
        "and table_name in ('dim_hubs', 'dim_neighbourhoods')").fetchall()}
    if ("dim_hubs", "hub_id") not in cols:
        return pl.DataFrame(schema=PLACE_SCHEMA)

    def hub(c: str, typ: str, default: str | None = None) -> str:
        return f"h.{c}" if ("dim_hubs", c) in cols else (default or f"NULL::{typ}")

    with_nb = {("dim_neighbourhoods", c) for c in ("neighbourhood_id", "name", "lat", "lon")} <= cols
    nb = "n.name, n.lat::DOUBLE, n.lon::DOUBLE" if with_nb else "h.neighbourhood_id, NULL::DOUBLE, NULL::DOUBLE"
    join = "left join marts.dim_neighbourhoods n using (neighbourhood_id)" if with_nb else ""
    sql = f"""select h.hub_id, {hub("name", "VARCHAR", "h.hub_id")}, {hub("address", "VARCHAR")},
                     {hub("lat", "DOUBLE")}::DOUBLE, {hub("lon", "DOUBLE")}::DOUBLE, h.neighbourhood_id, {nb}
              from marts.dim_hubs h {join} order by 1"""
    return pl.DataFrame(con.execute(sql).fetchall(), schema=PLACE_SCHEMA, orient="row")


def with_places(plan: pl.DataFrame, places: pl.DataFrame | None) -> pl.DataFrame:
    """The plan with names, location and window hours, sorted by plan date, hub, category
    and delivery window in time order (night before morning), key columns first."""
    if places is None or places.is_empty():
        places = plan.select("hub_id", "neighbourhood_id").unique().with_columns(
            pl.col("hub_id").alias("hub_name"), pl.lit(None, pl.String).alias("hub_address"),
            pl.lit(None, pl.Float64).alias("lat"), pl.lit(None, pl.Float64).alias("lon"),
            pl.col("neighbourhood_id").alias("neighbourhood_name"))
    out = plan.join(places.drop("neighbourhood_id", *CENTROID, strict=False), on="hub_id", how="left").with_columns(
        pl.col("hub_name").fill_null(pl.col("hub_id")),
        pl.col("neighbourhood_name").fill_null(pl.col("neighbourhood_id")))
    if "window" not in out.columns:
        out = out.with_columns(pl.lit(DAY).alias("window"))
    out = out.with_columns(pl.col("window").replace_strict(WINDOW_HOURS, default="").alias("window_hours"))
    out = (out.with_columns(pl.col("window").replace_strict(WINDOW_ORDER, default=99).alias("_w"))
           .sort("plan_date", "hub_id", "category", "_w").drop("_w"))
    first = [c for c in HEADERS if c in out.columns]
    return out.select(first + [c for c in out.columns if c not in first])


def for_people(plan: pl.DataFrame, places: pl.DataFrame | None) -> pl.DataFrame:
    """`with_places`, with the headers people read (units and currency in them)."""
    out = with_places(plan, places)
    return out.rename({c: HEADERS[c][0] for c in out.columns if c in HEADERS})


def kinds(columns: list[str]) -> list[str]:
    """The kind (date, int, float, pct, eur, coord, text) of each people-facing header."""
    by_header = {h: k for h, k in HEADERS.values()}
    return [by_header.get(c, "text") for c in columns]
