"""Forecast and staging-plan assets: read the marts, write forecasts.* and the plan exports.

Two steps, both in the writer pool:
- `nightly_forecast` (the nightly job): demand forecast and staging plan for the next day(s);
- `forecasts/calibration` (its own job, weekly): the rolling-origin warehouse backtest that
  learns the interval calibration the nightly forecast applies, and stores its metrics and
  the cost simulation for the report. When a night finds no calibration at all (a new
  warehouse), the nightly step runs the same backtest first and records it as a
  materialization of `forecasts/calibration`, so even the first plan has calibrated intervals.
  (It is not an upstream step of the nightly job: an asset that skips itself would make
  Dagster skip everything downstream of it, the forecast and the publish.)
"""

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import duckdb

from pipelines.partitions import context_dates, single_run
from pipelines.resources import WRITER_POOL, WarehouseResource
from pipelines.unchanged import (
    StepState,
    check_outcomes,
    clear_state,
    digest,
    dump_metadata,
    files_digest,
    read_state,
    relations_digest,
    report_unchanged,
    unchanged,
    whole_asset_selected,
    write_state,
)
from warehouse.tables import tables_in

if TYPE_CHECKING:
    from forecasts.config import ForecastConfig as ForecastEngineConfig
    from forecasts.evaluate import WarehouseBacktest

OWNER = "team:operations-analytics"
CALIBRATION_KEY = dg.AssetKey(["forecasts", "calibration"])
CALIBRATION_JOB = "forecast_calibration"
PLAN_KEY = dg.AssetKey(["forecasts", "staging_plan"])
PLAN_CHECKS = {
    "one_row_per_hub_category_window": "One row per hub × category × day × delivery window; every forecast hub × category × day planned.",
    "no_negative_units": "No plan row stages a negative (or missing) number of units.",
    "within_capacity": "A hub's units per day fit its category capacity and its total capacity.",
    "totals_consistent_with_forecast": "Per neighbourhood × category × day the units add up to the forecast's newsvendor quantile, less only where a hub is capped.",
}
FORECAST_KEY = dg.AssetKey(["forecasts", "demand_forecast"])
FORECAST_CHECKS = {
    "forecast_complete": "One row per neighbourhood × category × day, every series on every forecast day, every quantile a finite number.",
}
MART_DEPS = [
    dg.AssetKey(["marts", "neighbourhood_demand_daily"]),
    dg.AssetKey(["marts", "hub_capacity"]),
    dg.AssetKey(["marts", "dim_hubs"]),
    dg.AssetKey(["marts", "dim_categories"]),
    dg.AssetKey(["marts", "dim_events"]),
]


class ForecastConfig(dg.Config):
    horizon_days: int = 1
    workers: int = 2
    backtest_if_uncalibrated: bool = True  # no forecasts.calibration yet: learn it first (once)


class CalibrationConfig(dg.Config):
    horizon_days: int = 7   # days forecast from each backtest origin
    n_origins: int = 4      # scored origins, 7 days apart (one more, earlier, only teaches)
    workers: int = 2




def calibrate(con: duckdb.DuckDBPyConnection, as_of: date | None, cfg: CalibrationConfig,
              engine: "ForecastEngineConfig") -> dict[str, dg.MetadataValue]:
    """Run the warehouse backtest (it replaces forecasts.calibration, backtest_metrics,
    backtest_metrics_series and value_metrics for its as_of) and describe it for Dagster."""
    from forecasts.evaluate import run_warehouse_backtest

    wb = run_warehouse_backtest(con, as_of, horizon=cfg.horizon_days, n_origins=cfg.n_origins, workers=cfg.workers,
                                config=engine)
    return calibration_metadata(wb)


def calibration_metadata(wb: "WarehouseBacktest") -> dict[str, dg.MetadataValue]:
    """MASE, coverage per quantile level and series count of civicflow's forecasts in the
    backtest (all series; per series class in the table), and what the calibration holds."""
    from forecasts.backtest import CIVICFLOW
    from forecasts.quantiles import LEVEL_COLUMNS, LEVELS

    md: dict[str, dg.MetadataValue] = {
        "as_of": dg.MetadataValue.text(str(wb.as_of)),
        "series": dg.MetadataValue.int(int(wb.backtest.n_series) if wb.backtest else 0),
        "origins": dg.MetadataValue.int(int(wb.backtest.n_origins) if wb.backtest else 0),
        "calibration_groups": dg.MetadataValue.int(int(wb.calibration_rows // len(LEVELS))),
        "seconds": dg.MetadataValue.float(float(wb.timings.get("total_s", 0.0))),
    }
    m = wb.metrics
    if m.is_empty():
        md["note"] = dg.MetadataValue.text("history too short for a backtest origin: intervals stay in_sample")
        return md
    civ = m.filter((m["method"] == CIVICFLOW) & (m["kind"] == "*")).row(0, named=True)
    md["mase"] = dg.MetadataValue.float(round(float(civ["mase"]), 4))
    if civ.get("mase_vs_naive") is not None:
        md["mase_vs_seasonal_naive"] = dg.MetadataValue.float(round(float(civ["mase_vs_naive"]), 4))
    md["pinball"] = dg.MetadataValue.float(round(float(civ["pinball"]), 4))
    for q, c in zip(LEVELS, LEVEL_COLUMNS):
        md[f"coverage_{c} (nominal {q:.2f})"] = dg.MetadataValue.float(round(float(civ[f"cov_{c}"]), 4))
    rows = ["| method | class | series | MASE | " + " | ".join(LEVEL_COLUMNS) + " |",
            "|---|---|---:|---:|" + "---:|" * len(LEVEL_COLUMNS)]
    for r in m.sort("method", "kind").iter_rows(named=True):
        cov = " | ".join(f"{r[f'cov_{c}']:.2f}" for c in LEVEL_COLUMNS)
        mase = "" if r["mase"] is None else f"{r['mase']:.3f}"
        rows.append(f"| {r['method']} | {r['kind']} | {r['n_series']} | {mase} | {cov} |")
    md["metrics"] = dg.MetadataValue.md("\n".join(rows))
    reactive = wb.value.filter(wb.value["policy"] == "reactive") if wb.value.height else wb.value
    if reactive.height and reactive["civicflow_reduction"][0] is not None:
        md["cost_reduction_vs_reactive"] = dg.MetadataValue.float(round(float(reactive["civicflow_reduction"][0]), 4))
    return md


def build_calibration_asset(engine: "ForecastEngineConfig") -> dg.AssetsDefinition:
    @dg.asset(
        key=CALIBRATION_KEY,
        deps=MART_DEPS,
        group_name="forecasts",
        owners=[OWNER],
        pool=WRITER_POOL,
        description="Rolling-origin backtest of the forecaster on the warehouse: the interval calibration the nightly forecast applies (forecasts.calibration), MASE/pinball/coverage per method and series class (forecasts.backtest_metrics, backtest_metrics_series) and the fulfilment-cost simulation (forecasts.value_metrics). Weekly, and on the first night without a calibration.",
        kinds={"prophet", "duckdb"},
    )
    def calibration(context: dg.AssetExecutionContext, config: CalibrationConfig, warehouse: WarehouseResource) -> dg.MaterializeResult:
        with warehouse.connect(context) as con:
            md = calibrate(con, None, config, engine)  # as of the last day with demand
        context.log.info(f"calibration: {({k: v.value for k, v in md.items() if k != 'metrics'})}")
        return dg.MaterializeResult(metadata=md)

    return calibration


def build_calibration_job(calibration: dg.AssetsDefinition, notify_on_failure: dg.HookDefinition):  # an (unresolved) asset job
    return dg.define_asset_job(
        CALIBRATION_JOB,
        selection=[calibration],
        description="Weekly: back-test the forecaster on the warehouse and refresh the interval calibration the nightly plan uses.",
        hooks={notify_on_failure},
        executor_def=dg.in_process_executor,  # one step; its fits fan out over the forecast pool
    )


def build_calibration_schedule(job, cron: str, tz: str) -> dg.ScheduleDefinition:
    """Weekly by default (settings: CIVICFLOW_CALIBRATION_CRON, CIVICFLOW_CALIBRATION_TZ)."""
    return dg.ScheduleDefinition(
        name="forecast_calibration_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone=tz,
        description=f"Refreshes the forecast interval calibration and backtest metrics ({cron}, {tz}).",
    )


def build_forecast_asset(exports_dir: Path, partitions_def: dg.PartitionsDefinition, engine: "ForecastEngineConfig") -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="nightly_forecast",
        specs=[
            dg.AssetSpec(
                dg.AssetKey(["forecasts", "demand_forecast"]),
                deps=MART_DEPS,
                group_name="forecasts",
                owners=[OWNER],
                description="Demand forecast per neighbourhood × category × day with calibrated quantiles (Prophet, events as holidays; intermittent fallback).",
                kinds={"prophet", "duckdb"},
            ),
            dg.AssetSpec(
                PLAN_KEY,
                deps=[dg.AssetKey(["forecasts", "demand_forecast"])],
                group_name="forecasts",
                owners=[OWNER],
                description="Units to pre-stage per hub × category × day: the newsvendor quantile, capped by hub capacity; exported for operations.",
                kinds={"duckdb", "csv"},
            ),
        ],
        check_specs=[dg.AssetCheckSpec(name, asset=FORECAST_KEY, blocking=True, description=d) for name, d in FORECAST_CHECKS.items()]
        + [dg.AssetCheckSpec(name, asset=PLAN_KEY, blocking=True, description=d) for name, d in PLAN_CHECKS.items()],
        pool=WRITER_POOL,
        partitions_def=partitions_def,
        backfill_policy=single_run,
    )
    def nightly_forecast(context: dg.AssetExecutionContext, config: ForecastConfig, warehouse: WarehouseResource):
        from forecasts import calibration
        from forecasts.run import run_nightly_forecast

        last_day = context_dates(context)[-1]
        with warehouse.connect(context) as con:
            # As of the window's last day, or the last day with demand before it (never later data).
            as_of = con.execute(
                "SELECT max(demand_date) FROM marts.neighbourhood_demand_daily WHERE demand_date <= ?", [last_day]
            ).fetchone()[0]
            if as_of is None:
                raise dg.Failure(f"no demand in marts.neighbourhood_demand_daily up to {last_day}: nothing to forecast")
            if config.backtest_if_uncalibrated and not calibration.read(con):
                context.log.info("no interval calibration in the warehouse yet: running the backtest first")
                md = calibrate(con, as_of, CalibrationConfig(workers=config.workers), engine)
                context.log_event(dg.AssetMaterialization(
                    asset_key=CALIBRATION_KEY, metadata=md,
                    description="Learned by the nightly run: the warehouse had no calibration yet."))
            fingerprint = forecast_fingerprint(con, as_of, config, engine)
            last = read_state(con, FORECAST_STEP)
            whole = whole_asset_selected(context)
            if unchanged(context, last, fingerprint) and outputs_exist(last):
                yield from report_unchanged(context, last, f"same marts, calibration, settings and code as of {as_of}")
                return
            clear_state(con, FORECAST_STEP)
            checks: list = []
            try:
                summary = run_nightly_forecast(con, as_of=as_of, horizon_days=config.horizon_days, exports_dir=exports_dir,
                                               workers=config.workers, config=engine, before_export=plan_gate(checks))
            except PlanRefused:
                yield from check_results(checks)
                failed = [c.name for c in checks if not c.passed]
                raise dg.Failure(f"staging plan refused by its checks ({', '.join(failed)}): not stored, not exported",
                                 metadata={c.name: dg.MetadataValue.text(c.description) for c in checks if not c.passed}) from None
            chart = forecast_chart_md(con, as_of)
            by_method = ", ".join(f"{m} {n}" for m, n in sorted(summary.series_by_method.items()))
            context.log.info(  # one line a reader of `civicflow logs` can take in (the dataclass's repr was not)
                f"forecast as of {summary.as_of}: {summary.series_count} series ({by_method}), {summary.fallbacks} fallback(s), "
                f"intervals {summary.intervals}; plan for {summary.first_plan_date}: {summary.plan_rows} rows in {summary.plan_path}; "
                f"{summary.engine}, {summary.timings.get('total_s', 0):.1f} s")
            methods = getattr(summary, "series_by_method", {}) or {}
            results = forecast_results(summary, as_of, chart, methods)
            if whole:
                write_state(con, FORECAST_STEP, StepState(
                    fingerprint, context.run_id,
                    check_outcomes(list(check_results(checks))),
                    {r.asset_key.to_user_string(): dump_metadata(r.metadata) for r in results},
                ))
        yield from results
        yield from check_results(checks)

    return nightly_forecast


FORECAST_STEP = "forecast"
FORECASTS_CODE = Path(__file__).resolve().parent.parent / "forecasts"


def forecast_fingerprint(con: duckdb.DuckDBPyConnection, as_of: date, config: ForecastConfig, engine: "ForecastEngineConfig") -> str:
    """What the nightly forecast's result depends on (see pipelines.unchanged): every mart and
    the interval calibration, by content; the day, the horizon, the engine's settings and the
    forecasting code."""
    marts = [f"marts.{t}" for t in tables_in(con, "marts")]
    return digest([FORECAST_STEP, relations_digest(con, [*marts, "forecasts.calibration"]), as_of, config.horizon_days,
                   repr(engine), files_digest(FORECASTS_CODE.rglob("*.py"), FORECASTS_CODE)])


def outputs_exist(state: StepState) -> bool:
    """The exports the stored run wrote are still there (someone may have cleared them)."""
    plan = state.metadata.get(PLAN_KEY.to_user_string(), {})
    return all(Path(plan[k][1]).exists() for k in ("plan_path", "workbook") if plan.get(k) and plan[k][1])


def forecast_results(summary, as_of: date, chart: str, methods: dict) -> list[dg.MaterializeResult]:
    return [
        dg.MaterializeResult(
            asset_key=dg.AssetKey(["forecasts", "demand_forecast"]),
            metadata={
                "as_of": dg.MetadataValue.text(str(as_of)),
                "series": dg.MetadataValue.int(int(sum(methods.values()))),
                "series_by_method": dg.MetadataValue.json(dict(methods)),
                "fallbacks": dg.MetadataValue.int(int(getattr(summary, "fallbacks", 0) or 0)),
                "calibration": dg.MetadataValue.text(str(getattr(summary, "calibration_source", ""))),
                "intervals": dg.MetadataValue.text(str(getattr(summary, "intervals", ""))),
                "fan_out": dg.MetadataValue.text(str(getattr(summary, "engine", ""))),
                "forecast chart (city total)": dg.MetadataValue.md(chart),
                "seconds": dg.MetadataValue.json({k: round(float(v), 2) for k, v in (getattr(summary, "timings", {}) or {}).items()}),
                "report (charts of history, forecast and interval per hub)": dg.MetadataValue.path(str(getattr(summary, "report_path", "") or "")),
            },
        ),
        dg.MaterializeResult(
            asset_key=PLAN_KEY,
            metadata={
                "plan_rows": dg.MetadataValue.int(int(getattr(summary, "plan_rows", 0))),
                "plan_path": dg.MetadataValue.path(str(getattr(summary, "plan_path", ""))),
                "workbook": dg.MetadataValue.path(str(getattr(summary, "xlsx_path", "") or "")),
                "pick lists": dg.MetadataValue.path(
                    str(summary.report_path.parent / "pick_lists") if getattr(summary, "report_path", None) else ""),
                "windows": dg.MetadataValue.text(", ".join(getattr(summary, "windows", ()) or ())),
                "intervals": dg.MetadataValue.text(str(getattr(summary, "intervals", ""))),
            },
        ),
    ]


class PlanRefused(Exception):
    """A plan check failed: the nightly run stores and exports nothing."""


def plan_gate(into: list):
    """The `before_export` hook: run the plan checks, keep their results in `into` (the
    asset reports them), refuse the plan when one fails."""
    def gate(plan, forecast, hubs, capacity) -> None:
        from forecasts.plan_checks import check_forecast, check_plan

        into.extend(check_forecast(forecast) + check_plan(plan, forecast, hubs, capacity))
        if not all(c.passed for c in into):
            raise PlanRefused()
    return gate


def check_results(checks: list):
    for c in checks:
        yield dg.AssetCheckResult(asset_key=FORECAST_KEY if c.name in FORECAST_CHECKS else PLAN_KEY, check_name=c.name, passed=bool(c.passed),
                                  severity=dg.AssetCheckSeverity.ERROR,
                                  metadata={"failing_rows": dg.MetadataValue.int(int(c.failing)),
                                            "detail": dg.MetadataValue.text(c.description)})


def forecast_chart_md(con: duckdb.DuckDBPyConnection, as_of: date, history_days: int = 21) -> str:
    """The city's total demand, the last weeks and the forecast (p50, p10–p90), as a Markdown
    chart the Dagster UI renders in the asset's metadata (bars scaled to the largest value)."""
    rows = con.execute(
        """
        WITH hist AS (
            SELECT demand_date AS day, sum(units) AS units FROM marts.neighbourhood_demand_daily
            WHERE demand_date > ?::DATE - ?::INTEGER AND demand_date <= ? GROUP BY ALL
        ), fc AS (
            SELECT forecast_date AS day, sum(p10) AS p10, sum(p50) AS p50, sum(p90) AS p90
            FROM forecasts.demand_forecast WHERE as_of = ? GROUP BY ALL
        )
        SELECT day, units, NULL, NULL, NULL FROM hist
        UNION ALL SELECT day, NULL, p10, p50, p90 FROM fc ORDER BY 1
        """,
        [as_of, history_days, as_of, as_of],
    ).fetchall()
    top = max([v for r in rows for v in (r[1], r[4]) if v is not None] or [1.0]) or 1.0
    lines = ["| day | | units | bar |", "|---|---|---:|---|"]
    for day, units, p10, p50, p90 in rows:
        if units is not None:
            lines.append(f"| {day} | actual | {units:,.0f} | {'█' * round(24 * units / top)} |")
        else:
            bar = "▒" * round(24 * p50 / top) + "░" * max(0, round(24 * p90 / top) - round(24 * p50 / top))
            lines.append(f"| {day} | forecast | {p50:,.0f} ({p10:,.0f}–{p90:,.0f}) | {bar} |")
    return "\n".join(lines)

