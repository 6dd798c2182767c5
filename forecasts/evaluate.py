"""The rolling-origin backtest on the warehouse: read the demand mart through SQL, replay
the nightly forecaster at several origins, and store what it learned and measured.

Writes (each replaced for the backtest's as_of, in one transaction):

- `forecasts.backtest_metrics`: one row per method × series class (`kind = '*'` for all
  series): MASE (vs the in-sample seasonal-naive scale), MASE relative to seasonal naive,
  MAE, pinball loss, coverage of p10…p95 and of the 10–90 % interval, error on event days
  and on other days;
- `forecasts.backtest_metrics_series`: the same per series × method;
- `forecasts.value_metrics`: the fulfilment-cost simulation (value.py) per policy with the
  reduction and its bootstrap interval;
- `forecasts.calibration`: the interval calibration the nightly run applies (calibration.py).

Run it weekly (or after a model change); the nightly forecast reads its calibration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta

import duckdb
import polars as pl

from forecasts import calibration as calib
from forecasts.backtest import BacktestConfig, BacktestSummary, run_backtest
from forecasts.config import ForecastConfig
from forecasts.series import build_series, classify_series, last_demand_date, read_demand, read_events
from forecasts.tasks import build_tasks, event_calendar
from forecasts.value import policy_costs, summarise

ALL_KINDS = "*"

DDL = {
    "backtest_metrics": """
        create table if not exists forecasts.backtest_metrics (
            as_of DATE, horizon INTEGER, n_origins INTEGER, method VARCHAR, kind VARCHAR,
            n_series BIGINT, n BIGINT, mae DOUBLE, mase DOUBLE, mase_vs_naive DOUBLE, rel_mae_vs_naive DOUBLE,
            pinball DOUBLE, cov_p10 DOUBLE, cov_p50 DOUBLE, cov_p80 DOUBLE, cov_p90 DOUBLE, cov_p95 DOUBLE,
            cov_p10_p90 DOUBLE, n_event BIGINT, mae_event DOUBLE, mase_event DOUBLE, mae_non_event DOUBLE)""",
    "backtest_metrics_series": """
        create table if not exists forecasts.backtest_metrics_series (
            as_of DATE, series_id VARCHAR, method VARCHAR, used_methods VARCHAR, n BIGINT, mae DOUBLE,
            mase DOUBLE, mase_vs_naive DOUBLE, rel_mae_vs_naive DOUBLE, pinball DOUBLE,
            cov_p10 DOUBLE, cov_p50 DOUBLE, cov_p80 DOUBLE, cov_p90 DOUBLE, cov_p95 DOUBLE, cov_p10_p90 DOUBLE,
            n_event BIGINT, mae_event DOUBLE, mase_event DOUBLE, mae_non_event DOUBLE)""",
    "value_metrics": """
        create table if not exists forecasts.value_metrics (
            as_of DATE, policy VARCHAR, days BIGINT, series BIGINT, demand_units DOUBLE, staged_units DOUBLE,
            units_short DOUBLE, units_excess DOUBLE, cost DOUBLE, civicflow_reduction DOUBLE,
            reduction_ci_low DOUBLE, reduction_ci_high DOUBLE)""",
}


@dataclass(frozen=True)
class WarehouseBacktest:
    as_of: date | None
    backtest: BacktestSummary | None
    metrics: pl.DataFrame                 # backtest_metrics rows
    value: pl.DataFrame                   # value_metrics rows
    calibration_rows: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def warehouse_inputs(con: duckdb.DuckDBPyConnection, as_of: date):
    """Series, events, attendance (as the nightly run builds them), per-category costs and
    per-series capacity (sum over the neighbourhood's hubs)."""
    series = build_series(read_demand(con, as_of), as_of)
    classes = classify_series(series)
    tasks = build_tasks(series, classes, event_calendar(read_events(con)), [as_of + timedelta(days=60)])
    hist = {t.series_id: (t.ds, t.y) for t in tasks}
    events = {t.series_id: sorted(set(t.events)) for t in tasks}
    attendance = {t.series_id: t.attendance_hist for t in tasks if t.attendance_hist is not None}
    costs = {r[0]: (float(r[1]), float(r[2])) for r in con.execute(
        "select category, under_cost, over_cost from marts.dim_categories").fetchall()
        if r[1] is not None and r[2] is not None}
    capacity = {f"{nb}|{cat}": int(u) for nb, cat, u in con.execute(
        """select neighbourhood_id, category, sum(capacity_units) from marts.hub_capacity
           where category is not null and category <> '*' group by all""").fetchall() if u is not None}
    return hist, events, attendance, costs, capacity


def _replace(con: duckdb.DuckDBPyConnection, table: str, as_of: date, df: pl.DataFrame) -> None:
    con.execute(f"delete from forecasts.{table} where as_of = ?", [as_of])
    if df.height:
        name = f"_cf_{table}"
        con.register(name, df.with_columns(pl.lit(as_of).alias("as_of")).to_arrow())
        cols = [r[0] for r in con.execute(f"describe forecasts.{table}").fetchall()]
        keep = [c for c in cols if c in df.columns or c == "as_of"]
        con.execute(f"insert into forecasts.{table} by name select {', '.join(chr(34) + c + chr(34) for c in keep)} from {name}")
        con.unregister(name)


def run_warehouse_backtest(
    con: duckdb.DuckDBPyConnection,
    as_of: date | None = None,
    horizon: int = 7,
    n_origins: int = 4,
    workers: int = 2,
    n_boot: int = 2000,
    config: ForecastConfig = ForecastConfig(),
) -> WarehouseBacktest:
    """Backtest the forecaster on the demand mart as of `as_of` (default: the last day with
    demand) and replace that as_of's metrics, cost simulation and calibration. `config`:
    where the fits run, as for the nightly forecast."""
    t0 = time.perf_counter()
    as_of = as_of or last_demand_date(con)
    if as_of is None:
        return WarehouseBacktest(None, None, pl.DataFrame(), pl.DataFrame())
    hist, events, attendance, costs, capacity = warehouse_inputs(con, as_of)
    bt = run_backtest(hist, events, BacktestConfig(horizon=horizon, n_origins=n_origins), workers=workers,
                      attendance=attendance, config=config)
    timings = {"backtest_s": round(time.perf_counter() - t0, 3)}
    meta = {"horizon": horizon, "n_origins": bt.n_origins}
    metrics = pl.DataFrame()
    if bt.overall.height:
        overall = bt.overall.with_columns(pl.lit(ALL_KINDS).alias("kind"))
        by_kind = bt.by_kind
        metrics = pl.concat([overall, by_kind], how="diagonal_relaxed").with_columns(
            *[pl.lit(v).alias(k) for k, v in meta.items()])
    value = summarise(policy_costs(bt.points, hist, costs, capacity), n_boot=n_boot) if bt.points.height else pl.DataFrame()

    con.execute("create schema if not exists forecasts")
    for ddl in DDL.values():
        con.execute(ddl)
    con.execute("begin transaction")
    try:
        _replace(con, "backtest_metrics", as_of, metrics)
        _replace(con, "backtest_metrics_series", as_of, bt.per_series)
        _replace(con, "value_metrics", as_of, value)
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise
    n_cal = calib.write(con, bt.calibration, as_of, bt.n_origins)
    timings["total_s"] = round(time.perf_counter() - t0, 3)
    return WarehouseBacktest(as_of, bt, metrics, value, n_cal, timings)


def read_latest(con: duckdb.DuckDBPyConnection, as_of: date | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(backtest_metrics, value_metrics) of the latest backtest at or before `as_of`
    (empty frames when none was run) — for the report."""
    have = {r[0] for r in con.execute(
        "select table_name from information_schema.tables where table_schema = 'forecasts'").fetchall()}
    if "backtest_metrics" not in have:
        return pl.DataFrame(), pl.DataFrame()
    cond, args = ("where as_of <= ?", [as_of]) if as_of else ("", [])
    last = con.execute(f"select max(as_of) from forecasts.backtest_metrics {cond}", args).fetchone()[0]
    if last is None:
        return pl.DataFrame(), pl.DataFrame()
    m = con.execute("select * from forecasts.backtest_metrics where as_of = ? order by kind, method", [last]).pl()
    v = (con.execute("select * from forecasts.value_metrics where as_of = ? order by policy", [last]).pl()
         if "value_metrics" in have else pl.DataFrame())
    return m, v
