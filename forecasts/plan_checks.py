"""What a staging plan must satisfy before anyone is sent to stage it.

Pure functions over the plan, the forecast it came from and the hubs' capacity; the
Dagster asset turns each into a blocking asset check, so a plan that fails is never
exported. Each check says how many rows fail and shows the first few, so the operator can
find them.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from forecasts.planner import TOTAL_CATEGORY, newsvendor_units
from forecasts.quantiles import LEVEL_COLUMNS, enforce_monotone
from forecasts.windows import DAY, WINDOWS

WHOLE_DAYS = [DAY, ",".join(sorted(w[0] for w in WINDOWS))]  # the window sets a day may have
SHOWN = 5  # failing rows quoted in a check's description


@dataclass(frozen=True)
class PlanCheck:
    name: str
    passed: bool
    failing: int
    description: str


def _result(name: str, what: str, bad: pl.DataFrame) -> PlanCheck:
    if bad.is_empty():
        return PlanCheck(name, True, 0, f"every row: {what}")
    sample = "; ".join(", ".join(f"{k}={v}" for k, v in r.items()) for r in bad.head(SHOWN).iter_rows(named=True))
    return PlanCheck(name, False, bad.height, f"{bad.height} failing ({what}): {sample}")


def one_row_per_key(plan: pl.DataFrame, forecast: pl.DataFrame, hubs: pl.DataFrame) -> PlanCheck:
    """No duplicate hub × category × day × window, every hub × category × day with a
    forecast is planned, and each such day is either one whole-day row or all the windows."""
    key = ["plan_date", "hub_id", "category", "window"]
    dup = plan.group_by(key).len().filter(pl.col("len") > 1).sort(key)
    expected = (forecast.select("neighbourhood_id", "category", pl.col("forecast_date").alias("plan_date")).unique()
                .join(hubs.select("hub_id", "neighbourhood_id"), on="neighbourhood_id"))
    missing = (expected.join(plan.select("plan_date", "hub_id", "category").unique(),
                             on=["plan_date", "hub_id", "category"], how="anti")
               .select("plan_date", "hub_id", "category", pl.lit("missing").alias("problem")).sort("plan_date", "hub_id", "category"))
    windows = plan.group_by("plan_date", "hub_id", "category").agg(pl.col("window").sort().str.join(",").alias("windows"))
    odd = windows.filter(~pl.col("windows").is_in(WHOLE_DAYS)).sort("plan_date", "hub_id", "category")
    bad = pl.concat([
        dup.select(*key, pl.lit("duplicate").alias("problem")).drop("window"),
        missing,
        odd.select("plan_date", "hub_id", "category", (pl.lit("windows ") + pl.col("windows")).alias("problem")),
    ], how="vertical_relaxed")
    return _result("one_row_per_hub_category_window", "one row per hub × category × day × window", bad)


def no_negative_units(plan: pl.DataFrame) -> PlanCheck:
    bad = plan.filter(pl.col("units").is_null() | (pl.col("units") < 0)).select("plan_date", "hub_id", "category", "window", "units")
    return _result("no_negative_units", "units ≥ 0", bad)


def within_capacity(plan: pl.DataFrame, capacity: pl.DataFrame) -> PlanCheck:
    """A day's units at a hub fit its category capacity and, when it has one, its total."""
    day = plan.group_by("plan_date", "hub_id", "category").agg(pl.col("units").sum())
    cat_cap = capacity.filter(pl.col("category").is_not_null() & (pl.col("category") != TOTAL_CATEGORY))
    over_cat = (day.join(cat_cap.select("hub_id", "category", "capacity_units"), on=["hub_id", "category"])
                .filter(pl.col("units") > pl.col("capacity_units")))
    tot_cap = capacity.filter(pl.col("category").is_null() | (pl.col("category") == TOTAL_CATEGORY))
    over_tot = (day.group_by("plan_date", "hub_id").agg(pl.col("units").sum())
                .join(tot_cap.select("hub_id", "capacity_units"), on="hub_id")
                .filter(pl.col("units") > pl.col("capacity_units")).with_columns(pl.lit(TOTAL_CATEGORY).alias("category")))
    bad = pl.concat([over_cat.select("plan_date", "hub_id", "category", "units", "capacity_units"),
                     over_tot.select("plan_date", "hub_id", "category", "units", "capacity_units")],
                    how="vertical_relaxed").sort("plan_date", "hub_id", "category")
    return _result("within_capacity", "a hub's day fits its capacity", bad)


def totals_match_forecast(plan: pl.DataFrame, forecast: pl.DataFrame) -> PlanCheck:
    """Per neighbourhood × category × day the plan's target is the newsvendor quantile of
    the forecast, and the hubs' units add up to it unless a hub was capped (then less)."""
    if plan.is_empty():
        return _result("totals_consistent_with_forecast", "no plan rows", plan)
    nb = plan.group_by("plan_date", "neighbourhood_id", "category").agg(
        pl.col("units").sum(), pl.col("neighbourhood_units").first().alias("target"),
        pl.col("quantile").first(), pl.col("cap_reason").is_not_null().any().alias("capped"))
    f = (forecast.select("neighbourhood_id", "category", pl.col("forecast_date").alias("plan_date"), *LEVEL_COLUMNS)
         .join(nb, on=["plan_date", "neighbourhood_id", "category"], how="inner"))
    q = enforce_monotone(f.select(LEVEL_COLUMNS).to_numpy().astype(float))
    want = [int(newsvendor_units(q[i][None, :], r)[0]) for i, r in enumerate(f["quantile"].to_list())]
    f = f.with_columns(pl.Series("forecast_target", want, pl.Int64))
    bad = f.filter((pl.col("target") != pl.col("forecast_target")) | (pl.col("units") > pl.col("target"))
                   | (~pl.col("capped") & (pl.col("units") != pl.col("target"))))
    bad = bad.select("plan_date", "neighbourhood_id", "category", "units", "target", "forecast_target").sort(
        "plan_date", "neighbourhood_id", "category")
    return _result("totals_consistent_with_forecast", "units add up to the forecast's newsvendor quantile, less only where capped", bad)


def check_plan(plan: pl.DataFrame, forecast: pl.DataFrame, hubs: pl.DataFrame, capacity: pl.DataFrame) -> list[PlanCheck]:
    return [one_row_per_key(plan, forecast, hubs), no_negative_units(plan),
            within_capacity(plan, capacity), totals_match_forecast(plan, forecast)]


def forecast_complete(forecast: pl.DataFrame) -> PlanCheck:
    """The forecast the plan is cut from: one row per neighbourhood × category × day, every
    series on every forecast day, and every quantile a finite number (a gap or a NaN would
    silently stage nothing for that series)."""
    what = "one row per neighbourhood × category × day, every series on every day, finite quantiles"
    key = ["neighbourhood_id", "category", "forecast_date"]
    if forecast.is_empty():
        return PlanCheck("forecast_complete", False, 0, "0 failing: the forecast has no rows")
    days = forecast["forecast_date"].unique()
    series = forecast.select("neighbourhood_id", "category").unique()
    expected = series.join(pl.DataFrame({"forecast_date": days}), how="cross")
    missing = expected.join(forecast.select(key), on=key, how="anti").with_columns(pl.lit("missing").alias("problem"))
    duplicate = forecast.group_by(key).len().filter(pl.col("len") > 1).select(key).with_columns(pl.lit("duplicate").alias("problem"))
    not_finite = forecast.filter(pl.any_horizontal([pl.col(c).is_null() | ~pl.col(c).cast(pl.Float64).is_finite() for c in LEVEL_COLUMNS]))
    not_finite = not_finite.select(key).with_columns(pl.lit("quantile not a finite number").alias("problem"))
    bad = pl.concat([missing, duplicate, not_finite]).sort(key)
    return _result("forecast_complete", what, bad)


def check_forecast(forecast: pl.DataFrame) -> list[PlanCheck]:
    return [forecast_complete(forecast)]
