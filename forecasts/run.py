"""The nightly forecast, as one edge function the Dagster asset calls.

Reads the marts through SQL on the caller's connection, forecasts every demand series for
the days after `as_of`, plans staging, writes `forecasts.demand_forecast` and
`forecasts.staging_plan` (replacing the rows of the same as_of, so a re-run is a no-op),
and exports the plan files. Everything between the reads and the writes is pure.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl

from forecasts import calibration, overrides, review
from forecasts.calibration import IN_SAMPLE
from forecasts.config import ForecastConfig
from forecasts.engine import run_tasks_with_engine
from forecasts.evaluate import read_latest, run_warehouse_backtest
from forecasts.exports import atomic_write, export_plan, export_report, export_xlsx
from forecasts.model import SeriesForecast
from forecasts.picklist import export_pick_lists
from forecasts.places import read_places
from forecasts.planner import plan_staging
from forecasts.quantiles import LEVEL_COLUMNS
from forecasts.report import HISTORY_DAYS, render
from forecasts.series import build_series, classify_series, last_demand_date, read_demand, read_events
from forecasts.tasks import build_tasks, event_calendar
from forecasts.windows import read_profile, split_plan

FORECAST_SCHEMA: dict[str, pl.DataType] = {
    "as_of": pl.Date,
    "series_id": pl.String,
    "neighbourhood_id": pl.String,
    "category": pl.String,
    "forecast_date": pl.Date,
    "horizon": pl.Int32,
    "kind": pl.String,
    "method": pl.String,
    "mean": pl.Float64,
    **{c: pl.Float64 for c in LEVEL_COLUMNS},
    "calibration_scale": pl.Float64,
    "fallback_reason": pl.String,
    "calibration": pl.String,
}

DDL = {
    "demand_forecast": """
        create table if not exists forecasts.demand_forecast (
            as_of DATE, series_id VARCHAR, neighbourhood_id VARCHAR, category VARCHAR,
            forecast_date DATE, horizon INTEGER, kind VARCHAR, method VARCHAR, mean DOUBLE,
            p10 DOUBLE, p50 DOUBLE, p80 DOUBLE, p90 DOUBLE, p95 DOUBLE,
            calibration_scale DOUBLE, fallback_reason VARCHAR, calibration VARCHAR)""",
    "staging_plan": """
        create table if not exists forecasts.staging_plan (
            as_of DATE, plan_date DATE, hub_id VARCHAR, neighbourhood_id VARCHAR, category VARCHAR,
            units BIGINT, forecast_p50 DOUBLE, p10 DOUBLE, p90 DOUBLE, quantile DOUBLE,
            hub_share DOUBLE, neighbourhood_units BIGINT, capacity_units BIGINT, cap_reason VARCHAR,
            under_cost DOUBLE, over_cost DOUBLE, "window" VARCHAR, window_share DOUBLE, intervals VARCHAR)""",
}
# columns added after the first release: an older warehouse gets them on the next run
MIGRATIONS = [
    "alter table forecasts.demand_forecast add column if not exists calibration VARCHAR",
    'alter table forecasts.staging_plan add column if not exists "window" VARCHAR',
    "alter table forecasts.staging_plan add column if not exists window_share DOUBLE",
    "alter table forecasts.staging_plan add column if not exists intervals VARCHAR",
]
CALIBRATED = "calibrated"  # the plan's `intervals`: from the backtest's calibration table, else IN_SAMPLE


@dataclass(frozen=True)
class ForecastSummary:
    as_of: date | None
    horizon_days: int
    first_plan_date: date | None
    series_by_method: dict[str, int]
    series_by_kind: dict[str, int]
    fallbacks: int
    forecast_rows: int
    plan_rows: int
    plan_path: Path | None
    parquet_path: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    xlsx_path: Path | None = None
    report_path: Path | None = None          # the HTML report (charts, plan, backtest, value)
    calibration_source: str = "in_sample"    # "table as of <date>" when forecasts.calibration was applied
    windows: tuple[str, ...] = ()            # the plan's delivery windows ("day" when no hourly profile)
    intervals: str = IN_SAMPLE               # "calibrated" when every series' interval came from the table
    engine: str = ""                         # where the series were fitted (local pool, dask <address>)

    @property
    def series_count(self) -> int:
        return sum(self.series_by_method.values())


def forecasts_frame(results: list[SeriesForecast], series: pl.DataFrame, classes: pl.DataFrame,
                    as_of: date) -> pl.DataFrame:
    meta = {r["series_id"]: r for r in classes.iter_rows(named=True)}
    rows = []
    for r in results:
        m = meta[r.series_id]
        for k, d in enumerate(r.future_ds.astype("datetime64[D]").tolist()):
            rows.append({
                "as_of": as_of, "series_id": r.series_id, "neighbourhood_id": m["neighbourhood_id"],
                "category": m["category"], "forecast_date": d, "horizon": k + 1, "kind": m["kind"],
                "method": r.method, "mean": round(float(r.point[k]), 4),
                **{c: round(float(r.quantiles[k, j]), 4) for j, c in enumerate(LEVEL_COLUMNS)},
                "calibration_scale": float(r.calibration_scale), "fallback_reason": r.fallback_reason,
                "calibration": r.calibration,
            })
    df = pl.DataFrame(rows, schema=FORECAST_SCHEMA) if rows else pl.DataFrame(schema=FORECAST_SCHEMA)
    return df.sort("series_id", "forecast_date")


def with_interval_source(plan: pl.DataFrame, forecast: pl.DataFrame) -> pl.DataFrame:
    """The plan's `intervals` column: `calibrated` when the row's forecast interval came from
    the backtest's calibration table, `in_sample` when from the series' own in-sample errors
    (no table yet; a series with no demand at all keeps its zero interval)."""
    src = forecast.select(
        "neighbourhood_id", "category", pl.col("forecast_date").alias("plan_date"),
        pl.when(pl.col("calibration").fill_null(IN_SAMPLE).str.contains(IN_SAMPLE))
        .then(pl.lit(IN_SAMPLE)).otherwise(pl.lit(CALIBRATED)).alias("intervals"),
    )
    return plan.join(src, on=["neighbourhood_id", "category", "plan_date"], how="left", maintain_order="left")


def write_tables(con: duckdb.DuckDBPyConnection, as_of: date, forecast: pl.DataFrame, plan: pl.DataFrame) -> None:
    """Replace this as_of's rows in one transaction: a re-run never duplicates, a failure
    never leaves half a night. The plan is stored `proposed` (overrides.py approves it)."""
    con.execute("create schema if not exists forecasts")
    for ddl in DDL.values():
        con.execute(ddl)
    for sql in MIGRATIONS:
        con.execute(sql)
    plan_rows = plan.with_columns(pl.lit(as_of).alias("as_of"))
    overrides.ensure_tables(con)
    con.execute("begin transaction")
    try:
        overrides.mark_proposed(con, as_of)  # a new plan waits for sign-off; a re-run resets its dispatch
        for table, df in (("demand_forecast", forecast), ("staging_plan", plan_rows)):
            con.execute(f"delete from forecasts.{table} where as_of = ?", [as_of])
            if df.height:
                con.register("_cf_rows", df.to_arrow())
                con.execute(f"insert into forecasts.{table} by name select * from _cf_rows")
                con.unregister("_cf_rows")
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise


def report_from_warehouse(con: duckdb.DuckDBPyConnection, exports_dir: Path, as_of: date | None = None,
                          calibration_source: str = "", chromium: str | None = None) -> Path | None:
    """Render `<exports_dir>/<plan date>/report.html` from what the warehouse holds for
    `as_of` (default: the latest forecast): plan, forecast, recent demand, latest backtest
    and cost simulation, and the review (what changed since last night's plan, how last
    night's plan went, the 28-day scorecard). Beside it: the workbook (plan and review
    sheets), the review's CSVs and the pick lists (their PDF too with `chromium`). Reads
    only — usable on a published snapshot."""
    have = {r[0] for r in con.execute(
        "select table_name from information_schema.tables where table_schema = 'forecasts'").fetchall()}
    if "staging_plan" not in have:
        return None
    as_of = as_of or con.execute("select max(as_of) from forecasts.staging_plan").fetchone()[0]
    if as_of is None:
        return None
    plan = con.execute("select * exclude (as_of) from forecasts.staging_plan where as_of = ? "
                       "order by plan_date, hub_id, category, \"window\"", [as_of]).pl()
    forecast = con.execute("select * from forecasts.demand_forecast where as_of = ? order by series_id, forecast_date",
                           [as_of]).pl()
    history = con.execute(
        """select neighbourhood_id, category, demand_date ds, sum(units)::DOUBLE y
           from marts.neighbourhood_demand_daily where demand_date <= ? and demand_date > ?::DATE - ?
           group by all order by all""", [as_of, as_of, HISTORY_DAYS]).pl()
    metrics, value = read_latest(con, as_of)
    if not calibration_source and "calibration" in forecast.columns and forecast.height:
        calibration_source = ", ".join(sorted(set(",".join(forecast["calibration"].drop_nulls().to_list()).split(","))))
    if "calibration" in have and not metrics.is_empty():
        cal_as_of = con.execute("select max(as_of) from forecasts.calibration").fetchone()[0]
        if cal_as_of is not None:
            calibration_source = f"backtest of {cal_as_of} ({calibration_source})"
    first = plan["plan_date"].min() if plan.height else as_of + timedelta(days=1)
    events = read_events(con)
    places = read_places(con)
    reviewed = {"changes": review.plan_changes(con, as_of, events), "outcome": review.outcome(con, as_of),
                "scorecard": review.scorecard(con, as_of)}
    out_dir = Path(exports_dir) / str(first)
    out_dir.mkdir(parents=True, exist_ok=True)
    sheets = []
    for key, df in reviewed.items():
        people, col_kinds = review.for_people(df, places)
        atomic_write(out_dir / review.FILES[key], lambda p, people=people: people.write_csv(p, float_precision=4))
        sheets.append((review.SHEETS[key], people, col_kinds))
    export_xlsx(plan, exports_dir, first, places, extra=sheets)
    folder = export_pick_lists(plan, places, exports_dir, first, chromium) if plan.height else None
    text = render(plan, forecast, history, metrics, value, as_of, first, calibration_source,
                  events=events if events.height else None, places=places, changes=reviewed["changes"],
                  outcome=reviewed["outcome"], scorecard=reviewed["scorecard"],
                  pick_lists=folder.name if folder else None)
    return export_report(text, exports_dir, first)


def run_nightly_forecast(
    con: duckdb.DuckDBPyConnection,
    as_of: date | None,
    horizon_days: int,
    exports_dir: Path,
    workers: int = 2,
    calibrate: bool = True,
    windows: bool = True,
    report: bool = True,
    backtest_if_uncalibrated: bool = False,
    config: ForecastConfig = ForecastConfig(),
    before_export: Callable[[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame], None] | None = None,
) -> ForecastSummary:
    """Forecast, plan, store and export one night.

    calibrate: apply `forecasts.calibration` (learned by the last warehouse backtest);
      without a table the intervals come from each series' in-sample errors.
    windows: split each day's units into delivery windows from the hourly profile.
    report: also write staging_plan.xlsx, report.html, the review's CSVs and the pick lists
      next to the CSV (and the pick lists' PDF when `config.chromium` is set).
    backtest_if_uncalibrated: when there is no calibration table yet, run the warehouse
      backtest first (costs ~ n_origins × 3 fits per series, once).
    config: where the fits run (the local pool or a Dask cluster) and how they are chunked.
    before_export: called with (plan, forecast, hubs, capacity) before the plan is
      written or exported; raising stops both (the Dagster asset's plan checks).
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    as_of = as_of or last_demand_date(con)
    if as_of is None:  # empty mart: nothing to forecast, say so rather than fail
        return ForecastSummary(None, horizon_days, None, {}, {}, 0, 0, 0, None, None, {})
    future = [as_of + timedelta(days=k) for k in range(1, horizon_days + 1)]
    cal = calibration.read(con) if calibrate else calibration.Calibration()
    if calibrate and not cal and backtest_if_uncalibrated:
        t = time.perf_counter()
        run_warehouse_backtest(con, as_of, workers=workers, config=config)
        cal = calibration.read(con)
        timings["backtest_s"] = time.perf_counter() - t
    cal_source = "in_sample"
    if cal:
        cal_as_of = con.execute("select max(as_of) from forecasts.calibration").fetchone()[0]
        cal_source = f"table as of {cal_as_of}"
    demand = read_demand(con, as_of)
    events = read_events(con)
    hubs = con.execute("select hub_id, neighbourhood_id from marts.dim_hubs order by hub_id").pl()
    capacity = con.execute(
        "select hub_id, category, capacity_units from marts.hub_capacity order by hub_id, category").pl()
    categories = con.execute(
        "select category, under_cost, over_cost from marts.dim_categories order by category").pl()
    profile = read_profile(con, as_of) if windows else pl.DataFrame()
    timings["read_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    series = build_series(demand, as_of)
    classes = classify_series(series)
    tasks = build_tasks(series, classes, event_calendar(events), future, calibrate, cal if cal else None)
    timings["prepare_s"] = time.perf_counter() - t

    t = time.perf_counter()
    results, engine = run_tasks_with_engine(tasks, workers=workers, config=config)
    timings["fit_s"] = time.perf_counter() - t

    t = time.perf_counter()
    forecast = forecasts_frame(results, series, classes, as_of)
    plan = plan_staging(
        forecast.select("neighbourhood_id", "category", "forecast_date", *LEVEL_COLUMNS),
        hubs, capacity, categories,
    )
    plan = with_interval_source(split_plan(plan, profile), forecast)
    timings["plan_s"] = time.perf_counter() - t

    t = time.perf_counter()
    if before_export is not None:  # before the tables too: a refused plan is neither stored nor sent
        before_export(plan, forecast, hubs, capacity)
    write_tables(con, as_of, forecast, plan)
    places = read_places(con)
    paths = export_plan(plan, exports_dir, future[0], places)
    xlsx = report_path = None
    if report:
        report_path = report_from_warehouse(con, exports_dir, as_of, chromium=config.chromium)
        xlsx = report_path.parent / "staging_plan.xlsx"
    timings["write_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    return ForecastSummary(
        as_of=as_of,
        horizon_days=horizon_days,
        first_plan_date=future[0],
        series_by_method=dict(sorted(Counter(r.method for r in results).items())),
        series_by_kind=dict(sorted(Counter(classes["kind"].to_list()).items())),
        fallbacks=sum(1 for r in results if r.fallback_reason),
        forecast_rows=forecast.height,
        plan_rows=plan.height,
        plan_path=paths["csv"],
        parquet_path=paths["parquet"],
        timings={k: round(v, 3) for k, v in timings.items()},
        xlsx_path=xlsx,
        report_path=report_path,
        calibration_source=cal_source,
        windows=tuple(sorted(set(plan["window"].to_list()))) if plan.height else (),
        intervals=interval_summary(forecast),
        engine=engine,
    )


def interval_summary(forecast: pl.DataFrame) -> str:
    """`calibrated` when every series with demand got calibrated intervals, `in_sample` when
    none did, else how many did."""
    per_series = forecast.group_by("series_id").agg(
        (pl.col("calibration").fill_null(IN_SAMPLE).str.contains(IN_SAMPLE).any()).alias("own"),
        (pl.col("mean").max() > 0).alias("demand"))
    judged = per_series.filter(pl.col("demand"))
    own = int(judged["own"].sum()) if judged.height else 0
    if judged.height and own == 0:
        return CALIBRATED
    if own == judged.height:
        return IN_SAMPLE
    return f"{CALIBRATED} ({judged.height - own} of {judged.height} series; the rest {IN_SAMPLE})"
