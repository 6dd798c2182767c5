"""Dagster definitions: the nightly job and everything it wires (DESIGN.md "Data flow").

ingest (raw/*) → dbt (staging/*, intermediate/*, marts/*) → forecasts/* → published snapshot.
Every asset that writes the warehouse runs in the `warehouse` pool (limit 1, dagster.yaml).

Nothing happens at import: `defs()` (what `dagster dev -m pipelines.definitions` loads) and
`nightly_job_def()` (what a run worker reconstructs) build the definitions of one home from its
settings, once per home and process.
"""

from __future__ import annotations

import warnings
from datetime import date
from functools import cache
from pathlib import Path

import dagster as dg

from pipelines.settings import Settings

NIGHTLY_JOB = "nightly"

# Dagster copies each sensor while it resolves a job and passes `owners` (None here) on, which
# its own beta check reports on every run's console; the sensors here set no owner.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message="Parameter `owners` of initializer `SensorDefinition")


def build_definitions(settings: Settings, last_day: date | None = None) -> dg.Definitions:
    """Everything of one home; the partitions end at `last_day` (default: the last delivered day)."""
    from pipelines.dbt_assets import build_dbt_assets, dbt_project
    from pipelines.dbt_resource import DbtCli
    from pipelines.delivery_days import landing_days
    from pipelines.forecast_assets import build_calibration_asset, build_calibration_job, build_calibration_schedule, build_forecast_asset
    from pipelines.freshness import with_freshness
    from pipelines.governance_assets import build_usage_asset
    from pipelines.home import prepare_home
    from pipelines.ingest_assets import build_ingest_assets
    from pipelines.notify import assets_by_op, build_alert_sensors, build_alerts_job, build_failure_hook
    from pipelines.overrides_assets import build_overrides_job, build_overrides_sensor
    from pipelines.partitions import daily_partitions
    from pipelines.publish_assets import build_publish_asset
    from pipelines.resources import WarehouseResource
    from pipelines.schedules import build_nightly_schedule
    from pipelines.sensors import build_landing_sensor

    home = prepare_home(settings.home, settings.dagster_pg_url)
    if last_day is None:
        delivered = landing_days(home, settings.schedule.start_date)
        last_day = delivered[1] if delivered else settings.schedule.start_date
    daily = daily_partitions(settings.schedule.start_date, last_day)
    project = dbt_project()

    ingest_assets = build_ingest_assets(home.landing, daily, settings.ingest)
    warehouse_dbt = build_dbt_assets(project, daily, settings.ingest.fault)
    nightly_forecast = build_forecast_asset(home.exports, daily, settings.forecast)
    model_keys = [k for k in warehouse_dbt.keys if k.path[0] != "raw"]
    warehouse_snapshot = build_publish_asset(home.published, sorted(model_keys, key=str) + list(nightly_forecast.keys), daily, Path(project.manifest_path),
                                             fault=settings.ingest.fault)
    nightly_assets = with_freshness([*ingest_assets, warehouse_dbt, nightly_forecast, warehouse_snapshot], settings.schedule.fresh_by)

    usage_report = build_usage_asset(home)
    forecast_calibration = build_calibration_asset(settings.forecast)
    notify = build_failure_hook(settings, assets_by_op([*nightly_assets, forecast_calibration]))

    nightly_job = dg.define_asset_job(
        NIGHTLY_JOB,
        selection=dg.AssetSelection.assets(*nightly_assets),
        description="The nightly run for one delivery day (or a range, as one run): ingest, dbt build, forecast, stage, publish.",
        partitions_def=daily,
        hooks={notify},
        # Every step writes the warehouse, so the pool runs them one at a time anyway; in one
        # process they skip a subprocess start and a definitions import each. The forecast step
        # fans out over both cores with its own process pool.
        executor_def=dg.in_process_executor,
    )
    # Analysts' usage is counted per calendar day of queries, not per delivery day: its own job.
    usage_job = dg.define_asset_job("governance_usage", selection=[usage_report], description="Yesterday's query usage per team.")
    calibration_job = build_calibration_job(forecast_calibration, notify)
    overrides_job = build_overrides_job(home.overrides, home.exports)
    alerts_job = build_alerts_job(settings)
    schedules = [
        build_nightly_schedule(nightly_job, daily, at=settings.schedule.nightly_at, timezone=settings.schedule.nightly_tz),
        dg.ScheduleDefinition(
            name="governance_usage_schedule", job=usage_job, cron_schedule="15 0 * * *", execution_timezone="UTC",
            description="Writes yesterday's per-team usage report (exports/usage/) just after midnight UTC.",
        ),
        build_calibration_schedule(calibration_job, settings.schedule.calibration_cron, settings.schedule.calibration_tz),
    ]
    return dg.Definitions(
        assets=[*nightly_assets, usage_report, forecast_calibration],
        jobs=[nightly_job, usage_job, calibration_job, overrides_job, alerts_job],
        schedules=schedules,
        sensors=[build_landing_sensor(nightly_job, home.landing, daily), build_overrides_sensor(overrides_job, home.overrides),
                 *build_alert_sensors(nightly_job, alerts_job)],
        resources={
            "warehouse": WarehouseResource.from_settings(settings.warehouse),
            "dbt": DbtCli(project_dir=project, profiles_dir=str(project.profiles_dir)),
        },
    )


@cache
def definitions_for(home_root: str | None = None, last_day: str | None = None) -> dg.Definitions:
    """The definitions of a home (default: the settings' home) whose partitions end at
    `last_day` (default: its last delivered day), built once per process and last day."""
    settings = Settings.from_env(home=Path(home_root) if home_root else None)
    return build_definitions(settings, date.fromisoformat(last_day) if last_day else None)


@dg.definitions
def defs() -> dg.Definitions:
    return definitions_for(None)


def nightly_job_def(home_root: str | None = None, last_day: str | None = None) -> dg.JobDefinition:
    """Entry point for `execute_job` (the job must be reconstructable in run workers).

    `home_root` and `last_day` are part of the code pointer on purpose: Dagster caches a
    reconstructed job by its pointer, so a second home in the same process gets its own job
    and warehouse path, and a day delivered since gets partitions that include it.
    """
    return definitions_for(home_root, last_day).resolve_job_def(NIGHTLY_JOB)
