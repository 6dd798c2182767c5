"""What changed, and how it went: tonight's plan against last night's, last night's plan
against what happened, and a rolling scorecard of realised cost against the simple
policies.

All three read the warehouse through SQL (`forecasts.staging_plan` keeps one `as_of` per
night; `marts.hub_utilisation_daily` holds the pickups each hub saw) and compare per hub ×
category × day, summed over delivery windows. Costs are the plan's own (`under_cost` per
unit short, sent from the depot; `over_cost` per unit hauled back), as in `value.py`:

    cost(S, D) = under · max(D − S, 0) + over · max(S − D, 0)

The policies of the scorecard, on each scored day d (the plan made the night before d):

- `civicflow`: S = the units the model's plan staged for d at the hub;
- `dispatched`: S = the units sent after operations' overrides (overrides.py; the model's
  units where nothing was overridden), so the model and the overrides are scored apart;
- `yesterday`: S = the hub's pickups on d − 1, capped by its capacity;
- `reactive`: S = 0 (everything from the depot).
"""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import polars as pl

SCORE_DAYS = 28
REASON_EVENT, REASON_CAPACITY, REASON_TREND, REASON_NEW = "event", "capacity", "trend", "new in plan"

CHANGE_SCHEMA: dict[str, pl.DataType] = {
    "plan_date": pl.Date, "hub_id": pl.String, "neighbourhood_id": pl.String, "category": pl.String,
    "units": pl.Int64, "units_yesterday": pl.Int64, "change": pl.Int64,
    "p50": pl.Float64, "p50_yesterday": pl.Float64, "reason": pl.String, "why": pl.String,
}
OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "day": pl.Date, "hub_id": pl.String, "neighbourhood_id": pl.String, "category": pl.String,
    "staged": pl.Int64, "demand": pl.Float64, "units_short": pl.Float64, "hauled_back": pl.Float64,
    "service_level": pl.Float64, "cost": pl.Float64, "dispatched": pl.Int64, "cost_dispatched": pl.Float64,
}
SCORE_SCHEMA: dict[str, pl.DataType] = {
    "day": pl.Date, "demand": pl.Float64, "cost_civicflow": pl.Float64, "cost_dispatched": pl.Float64,
    "cost_yesterday": pl.Float64,
    "cost_reactive": pl.Float64, "rolling_civicflow": pl.Float64, "rolling_yesterday": pl.Float64,
    "rolling_reactive": pl.Float64, "rolling_dispatched": pl.Float64, "rolling_saving_vs_yesterday": pl.Float64,
    "rolling_saving_vs_reactive": pl.Float64, "days_scored": pl.Int32,
}


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {f"{s}.{t}" for s, t in con.execute(
        "select table_schema, table_name from information_schema.tables").fetchall()}


def _plan_by_hub(con: duckdb.DuckDBPyConnection, as_of: date, day: date | None = None) -> pl.DataFrame:
    """One night's plan summed over windows: hub × category × plan date, with the costs,
    capacity, whether a cap cut it and the hub's forecast median."""
    where = "as_of = ?" + (" and plan_date = ?" if day is not None else "")
    args = [as_of] + ([day] if day is not None else [])
    return con.execute(
        f"""select plan_date, hub_id, any_value(neighbourhood_id) neighbourhood_id, category,
                   sum(units)::BIGINT units, round(sum(forecast_p50), 2) p50,
                   bool_or(cap_reason is not null) capped, any_value(capacity_units) capacity_units,
                   any_value(under_cost) under_cost, any_value(over_cost) over_cost
            from forecasts.staging_plan where {where} group by plan_date, hub_id, category
            order by plan_date, hub_id, category""", args).pl()


def previous_as_of(con: duckdb.DuckDBPyConnection, as_of: date) -> date | None:
    """The night before `as_of` that has a plan (normally as_of − 1)."""
    if "forecasts.staging_plan" not in _tables(con):
        return None
    return con.execute("select max(as_of) from forecasts.staging_plan where as_of < ?", [as_of]).fetchone()[0]


def plan_changes(con: duckdb.DuckDBPyConnection, as_of: date, events: pl.DataFrame | None = None) -> pl.DataFrame:
    """Tonight's plan for its first day against what last night's plan said for that day,
    per hub × category, with the main reason for the change:

    - `capacity` when a capacity cap cut the units tonight or last night (the change is the
      space, not the demand);
    - `event` when an event at the hub's neighbourhood falls on the day;
    - `trend` otherwise: the forecast median moved (new demand data since last night);
    - `new in plan` when last night's plan did not cover the day or the hub.
    Empty without a previous night."""
    prev = previous_as_of(con, as_of)
    if prev is None:
        return pl.DataFrame(schema=CHANGE_SCHEMA)
    day = as_of + timedelta(days=1)
    now = _plan_by_hub(con, as_of, day)
    before = _plan_by_hub(con, prev, day).select(
        "hub_id", "category", pl.col("units").alias("units_yesterday"), pl.col("p50").alias("p50_yesterday"),
        pl.col("capped").alias("capped_yesterday"))
    j = now.join(before, on=["hub_id", "category"], how="left")
    ev_nb: dict[str, str] = {}
    if events is not None and not events.is_empty():
        on_day = events.filter((pl.col("start_date") <= day) & (pl.col("end_date") >= day)).sort("event_id")
        for r in on_day.iter_rows(named=True):
            ev_nb.setdefault(r["venue_neighbourhood_id"], f"{r['name']} ({int(r['expected_attendance'] or 0):,} expected)")
    rows = []
    for r in j.iter_rows(named=True):
        change = None if r["units_yesterday"] is None else int(r["units"]) - int(r["units_yesterday"])
        if change is None:
            reason, why = REASON_NEW, "last night's plan did not cover this day"
        elif change == 0:
            reason, why = "", ""
        elif r["capped"] or r["capped_yesterday"]:
            reason, why = REASON_CAPACITY, f"capped at the hub's space ({r['capacity_units']} units)"
        elif r["neighbourhood_id"] in ev_nb:
            reason, why = REASON_EVENT, ev_nb[r["neighbourhood_id"]]
        else:
            reason = REASON_TREND
            why = f"forecast median {r['p50_yesterday']:.1f} → {r['p50']:.1f} with last night's demand"
        rows.append({"plan_date": r["plan_date"], "hub_id": r["hub_id"], "neighbourhood_id": r["neighbourhood_id"],
                     "category": r["category"], "units": int(r["units"]), "units_yesterday": r["units_yesterday"],
                     "change": change, "p50": r["p50"], "p50_yesterday": r["p50_yesterday"],
                     "reason": reason, "why": why})
    return pl.DataFrame(rows, schema=CHANGE_SCHEMA)


def _actuals(con: duckdb.DuckDBPyConnection, first: date, last: date) -> pl.DataFrame:
    """Pickups per hub × category × day from `marts.hub_utilisation_daily`."""
    if "marts.hub_utilisation_daily" not in _tables(con):
        return pl.DataFrame(schema={"day": pl.Date, "hub_id": pl.String, "category": pl.String, "demand": pl.Float64})
    return con.execute(
        """select activity_date "day", hub_id, category, sum(pickup_units)::DOUBLE demand
           from marts.hub_utilisation_daily where activity_date between ? and ? group by all""",
        [first, last]).pl()


def _cost(staged: pl.Expr, demand: pl.Expr) -> pl.Expr:
    return (pl.col("under_cost") * (demand - staged).clip(lower_bound=0)
            + pl.col("over_cost") * (staged - demand).clip(lower_bound=0))


def _first_day_plans(con: duckdb.DuckDBPyConnection, first: date, last: date) -> pl.DataFrame:
    """For each day in [first, last]: the plan made the night before (as_of = day − 1): the
    model's units (`staged`) and what was dispatched after overrides (`dispatched`: the
    model's units when the plan was not overridden or not approved)."""
    plan = con.execute(
        """select plan_date "day", hub_id, any_value(neighbourhood_id) neighbourhood_id, category,
                  sum(units)::BIGINT staged, any_value(capacity_units) capacity_units,
                  any_value(under_cost) under_cost, any_value(over_cost) over_cost
           from forecasts.staging_plan
           where plan_date between ? and ? and as_of = plan_date - 1
           group by plan_date, hub_id, category order by 1, 2, 4""", [first, last]).pl()
    if "forecasts.dispatched_plan" not in _tables(con):
        return plan.with_columns(pl.col("staged").alias("dispatched"))
    sent = con.execute(
        """select plan_date "day", hub_id, category, sum(units)::BIGINT dispatched from forecasts.dispatched_plan
           where plan_date between ? and ? and as_of = plan_date - 1 group by all""", [first, last]).pl()
    return (plan.join(sent, on=["day", "hub_id", "category"], how="left")
            .with_columns(pl.coalesce("dispatched", "staged").alias("dispatched")))


def outcome(con: duckdb.DuckDBPyConnection, day: date) -> pl.DataFrame:
    """Last night's plan for `day` against what the hubs saw: per hub × category the units
    staged by the model and dispatched after overrides (each with its cost), the pickups, units short (sent from the depot), hauled back, the service level
    (share of demand served from the hub) and the cost. Empty when there was no plan for
    `day` or no pickups recorded for it."""
    if "forecasts.staging_plan" not in _tables(con):
        return pl.DataFrame(schema=OUTCOME_SCHEMA)
    plan = _first_day_plans(con, day, day)
    act = _actuals(con, day, day)
    if plan.is_empty() or act.is_empty():
        return pl.DataFrame(schema=OUTCOME_SCHEMA)
    j = plan.join(act, on=["day", "hub_id", "category"], how="left").with_columns(pl.col("demand").fill_null(0.0))
    s, d = pl.col("staged").cast(pl.Float64), pl.col("demand")
    out = j.with_columns(
        (d - s).clip(lower_bound=0).alias("units_short"), (s - d).clip(lower_bound=0).alias("hauled_back"),
        pl.when(d > 0).then(pl.min_horizontal(s, d) / d).otherwise(None).round(4).alias("service_level"),
        _cost(s, d).round(2).alias("cost"),
        _cost(pl.col("dispatched").cast(pl.Float64), d).round(2).alias("cost_dispatched"))
    return pl.DataFrame(out.select(list(OUTCOME_SCHEMA)), schema=OUTCOME_SCHEMA)


def scorecard(con: duckdb.DuckDBPyConnection, as_of: date, days: int = SCORE_DAYS) -> pl.DataFrame:
    """One row per scored day of the `days` up to `as_of`: realised cost of the plan made the
    night before, of staging the hub's pickups of the day before (`yesterday`, capped by
    capacity) and of staging nothing (`reactive`); the rolling totals over the days scored
    so far in the window and civicflow's saving against each. A day is scored when it had
    a plan and recorded pickups."""
    if "forecasts.staging_plan" not in _tables(con):
        return pl.DataFrame(schema=SCORE_SCHEMA)
    first = as_of - timedelta(days=days - 1)
    plan = _first_day_plans(con, first, as_of)
    act = _actuals(con, first - timedelta(days=1), as_of)
    if plan.is_empty() or act.is_empty():
        return pl.DataFrame(schema=SCORE_SCHEMA)
    scored_days = act["day"].unique()
    prev = act.select(pl.col("day") + pl.duration(days=1), "hub_id", "category", pl.col("demand").alias("d_prev"))
    j = (plan.filter(pl.col("day").is_in(scored_days.implode()))
         .join(act, on=["day", "hub_id", "category"], how="left")
         .join(prev, on=["day", "hub_id", "category"], how="left")
         .with_columns(pl.col("demand").fill_null(0.0), pl.col("d_prev").fill_null(0.0)))
    yest = pl.min_horizontal(pl.col("d_prev"), pl.col("capacity_units").cast(pl.Float64).fill_null(float("inf")))
    d = pl.col("demand")
    daily = (j.with_columns(_cost(pl.col("staged").cast(pl.Float64), d).alias("cost_civicflow"),
                            _cost(pl.col("dispatched").cast(pl.Float64), d).alias("cost_dispatched"),
                            _cost(yest, d).alias("cost_yesterday"), _cost(pl.lit(0.0), d).alias("cost_reactive"))
             .group_by("day").agg(pl.col("demand").sum(), pl.col("cost_civicflow").sum(), pl.col("cost_dispatched").sum(),
                                  pl.col("cost_yesterday").sum(), pl.col("cost_reactive").sum())
             .sort("day"))
    out = daily.with_columns(
        pl.col("cost_civicflow").cum_sum().alias("rolling_civicflow"),
        pl.col("cost_yesterday").cum_sum().alias("rolling_yesterday"),
        pl.col("cost_reactive").cum_sum().alias("rolling_reactive"),
        pl.col("cost_dispatched").cum_sum().alias("rolling_dispatched"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int32).alias("days_scored"),
    ).with_columns(
        pl.when(pl.col("rolling_yesterday") > 0).then(1 - pl.col("rolling_civicflow") / pl.col("rolling_yesterday"))
        .otherwise(None).alias("rolling_saving_vs_yesterday"),
        pl.when(pl.col("rolling_reactive") > 0).then(1 - pl.col("rolling_civicflow") / pl.col("rolling_reactive"))
        .otherwise(None).alias("rolling_saving_vs_reactive"),
    )
    out = out.with_columns(*[pl.col(c).round(4 if "saving" in c else 2) for c in SCORE_SCHEMA
                             if c not in ("day", "days_scored")])
    return pl.DataFrame(out.select(list(SCORE_SCHEMA)), schema=SCORE_SCHEMA)


# column → (header people read, kind for the workbook's number format)
PEOPLE: dict[str, tuple[str, str]] = {
    "plan_date": ("plan date", "date"), "day": ("day", "date"),
    "hub_id": ("hub", "text"), "hub_name": ("hub name", "text"), "neighbourhood_name": ("neighbourhood", "text"),
    "category": ("category", "text"),
    "units_yesterday": ("units in last night's plan (units)", "int"), "units": ("units to stage (units)", "int"),
    "change": ("change (units)", "int"), "p50_yesterday": ("median demand last night (units)", "float"),
    "p50": ("median demand (units)", "float"), "reason": ("main reason", "text"), "why": ("why", "text"),
    "staged": ("units staged (units)", "int"), "demand": ("units picked up (units)", "float"),
    "units_short": ("units short (units)", "float"), "hauled_back": ("units hauled back (units)", "float"),
    "service_level": ("service level (%)", "pct"), "cost": ("cost (EUR)", "eur"),
    "cost_civicflow": ("cost of the model's plan (EUR)", "eur"),
    "dispatched": ("units dispatched after overrides (units)", "int"),
    "cost_dispatched": ("cost of the dispatched plan (EUR)", "eur"),
    "rolling_dispatched": ("28-day cost of the dispatched plans (EUR)", "eur"),
    "cost_yesterday": ("cost staging yesterday's demand (EUR)", "eur"),
    "cost_reactive": ("cost staging nothing (EUR)", "eur"),
    "rolling_civicflow": ("28-day cost of the plans (EUR)", "eur"),
    "rolling_yesterday": ("28-day cost staging yesterday's demand (EUR)", "eur"),
    "rolling_reactive": ("28-day cost staging nothing (EUR)", "eur"),
    "rolling_saving_vs_yesterday": ("28-day saving vs yesterday's demand (%)", "pct"),
    "rolling_saving_vs_reactive": ("28-day saving vs staging nothing (%)", "pct"),
    "days_scored": ("days scored", "count"),
}
FILES = {"changes": "plan_changes.csv", "outcome": "how_it_went.csv", "scorecard": "scorecard_28_days.csv"}
SHEETS = {"changes": "What changed", "outcome": "How it went", "scorecard": "Scorecard 28 days"}


def for_people(df: pl.DataFrame, places: pl.DataFrame | None) -> tuple[pl.DataFrame, list[str]]:
    """`df` with hub and neighbourhood names (key columns first, ids dropped but the hub's),
    renamed to the headers people read; and each column's kind."""
    if "hub_id" in df.columns:
        names = (places.select("hub_id", "hub_name", "neighbourhood_name") if places is not None and not places.is_empty()
                 else df.select("hub_id").unique().with_columns(pl.col("hub_id").alias("hub_name"),
                                                                 pl.lit(None, pl.String).alias("neighbourhood_name")))
        df = df.join(names, on="hub_id", how="left").with_columns(
            pl.col("hub_name").fill_null(pl.col("hub_id")),
            pl.col("neighbourhood_name").fill_null(pl.col("neighbourhood_id")))
    cols = [c for c in PEOPLE if c in df.columns]
    out = df.select(cols)
    keys = [c for c in ("plan_date", "day", "hub_id", "category") if c in cols]
    out = out.sort(keys) if keys else out
    return out.rename({c: PEOPLE[c][0] for c in cols}), [PEOPLE[c][1] for c in cols]
