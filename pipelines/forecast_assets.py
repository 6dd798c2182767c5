"""Forecast and staging-plan assets: read the marts, write forecasts.* and the plan exports."""


from pathlib import Path

import dagster as dg

from pipelines.partitions import context_dates, daily, single_run
from pipelines.resources import WRITER_POOL, WarehouseResource

OWNER = "team:operations-analytics"
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


def build_forecast_asset(exports_dir: Path) -> dg.AssetsDefinition:
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
                dg.AssetKey(["forecasts", "staging_plan"]),
                deps=[dg.AssetKey(["forecasts", "demand_forecast"])],
                group_name="forecasts",
                owners=[OWNER],
                description="Units to pre-stage per hub × category × day: the newsvendor quantile, capped by hub capacity; exported for operations.",
                kinds={"duckdb", "csv"},
            ),
        ],
        pool=WRITER_POOL,
        partitions_def=daily,
        backfill_policy=single_run,
    )
    def nightly_forecast(context: dg.AssetExecutionContext, config: ForecastConfig, warehouse: WarehouseResource):
        from forecasts.run import run_nightly_forecast

        last_day = context_dates(context)[-1]
        with warehouse.connect(context) as con:
            # As of the window's last day, or the last day with demand before it (never later data).
            as_of = con.execute(
                "SELECT max(demand_date) FROM marts.neighbourhood_demand_daily WHERE demand_date <= ?", [last_day]
            ).fetchone()[0]
            if as_of is None:
                raise dg.Failure(f"no demand in marts.neighbourhood_demand_daily up to {last_day}: nothing to forecast")
            summary = run_nightly_forecast(con, as_of=as_of, horizon_days=config.horizon_days, exports_dir=exports_dir, workers=config.workers)
        context.log.info(f"forecast summary: {summary}")
        methods = getattr(summary, "series_by_method", {}) or {}
        yield dg.MaterializeResult(
            asset_key=dg.AssetKey(["forecasts", "demand_forecast"]),
            metadata={
                "as_of": dg.MetadataValue.text(str(as_of)),
                "series": dg.MetadataValue.int(int(sum(methods.values()))),
                "series_by_method": dg.MetadataValue.json(dict(methods)),
                "fallbacks": dg.MetadataValue.int(int(getattr(summary, "fallbacks", 0) or 0)),
                "calibration": dg.MetadataValue.text(str(getattr(summary, "calibration_source", ""))),
                "report (charts of history, forecast and interval per hub)": dg.MetadataValue.path(str(getattr(summary, "report_path", "") or "")),
            },
        )
        yield dg.MaterializeResult(
            asset_key=dg.AssetKey(["forecasts", "staging_plan"]),
            metadata={
                "plan_rows": dg.MetadataValue.int(int(getattr(summary, "plan_rows", 0))),
                "plan_path": dg.MetadataValue.path(str(getattr(summary, "plan_path", ""))),
                "workbook": dg.MetadataValue.path(str(getattr(summary, "xlsx_path", "") or "")),
                "windows": dg.MetadataValue.text(", ".join(getattr(summary, "windows", ()) or ())),
            },
        )

    return nightly_forecast
