"""Dagster definitions: the nightly job and everything it wires (DESIGN.md "Data flow").

ingest (raw/*) → dbt (staging/*, intermediate/*, marts/*) → forecasts/* → published snapshot.
Every asset that writes the warehouse runs in the `warehouse` pool (limit 1, dagster.yaml).
The home comes from CIVICFLOW_HOME; the same module serves `dagster dev`, the schedule and
`civicflow run`.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource

from ingest.contracts import CITY_TZ
from pipelines.dbt_assets import build_dbt_assets, dbt_project
from pipelines.forecast_assets import build_calibration_asset, build_calibration_job, build_calibration_schedule, build_forecast_asset
from pipelines.home import home_from_env, prepare_home
from pipelines.freshness import with_freshness
from pipelines.governance_assets import build_usage_asset
from pipelines.ingest_assets import build_ingest_assets
from pipelines.notify import notify_on_failure
from pipelines.partitions import daily
from pipelines.publish_assets import build_publish_asset
from pipelines.resources import WarehouseResource
from pipelines.schedules import build_nightly_schedule
from pipelines.sensors import build_landing_sensor

NIGHTLY_JOB = "nightly"

home = prepare_home(home_from_env())
project = dbt_project()

ingest_assets = build_ingest_assets(home.landing)
warehouse_dbt = build_dbt_assets(project)
nightly_forecast = build_forecast_asset(home.exports)
model_keys = [k for k in warehouse_dbt.keys if k.path[0] != "raw"]
warehouse_snapshot = build_publish_asset(home.published, upstream=sorted(model_keys, key=str) + list(nightly_forecast.keys))

nightly_assets = with_freshness([*ingest_assets, warehouse_dbt, nightly_forecast, warehouse_snapshot])

nightly_job = dg.define_asset_job(
    NIGHTLY_JOB,
    selection=dg.AssetSelection.assets(*nightly_assets),
    description="The nightly run for one delivery day (or a range, as one run): ingest, dbt build, forecast, stage, publish.",
    partitions_def=daily,
    hooks={notify_on_failure},
    # Every step writes the warehouse, so the pool runs them one at a time anyway; in one
    # process they skip a subprocess start and a definitions import each. The forecast step
    # fans out over both cores with its own process pool.
    executor_def=dg.in_process_executor,
)

nightly_schedule = build_nightly_schedule(
    nightly_job,
    at=os.environ.get("CIVICFLOW_NIGHTLY_AT", "02:30"),
    timezone=os.environ.get("CIVICFLOW_NIGHTLY_TZ", CITY_TZ),
)
landing_sensor = build_landing_sensor(nightly_job, home.landing, daily)

# Analysts' usage is counted per calendar day of queries, not per delivery day: its own job.
usage_report = build_usage_asset(home)
usage_job = dg.define_asset_job("governance_usage", selection=[usage_report], description="Yesterday's query usage per team.")
usage_schedule = dg.ScheduleDefinition(
    name="governance_usage_schedule", job=usage_job, cron_schedule="15 0 * * *", execution_timezone="UTC",
    description="Writes yesterday's per-team usage report (exports/usage/) just after midnight UTC.",
)

# The forecast's interval calibration (warehouse backtest): weekly, its own job (forecast_assets.py).
forecast_calibration = build_calibration_asset()
calibration_job = build_calibration_job(forecast_calibration)
calibration_schedule = build_calibration_schedule(calibration_job)

defs = dg.Definitions(
    assets=[*nightly_assets, usage_report, forecast_calibration],
    jobs=[nightly_job, usage_job, calibration_job],
    schedules=[nightly_schedule, usage_schedule, calibration_schedule],
    sensors=[landing_sensor],
    resources={
        "warehouse": WarehouseResource(path=str(home.warehouse)),
        "dbt": DbtCliResource(project_dir=project, profiles_dir=str(project.profiles_dir)),
    },
)


def nightly_job_def(home_root: str | None = None) -> dg.JobDefinition:
    """Entry point for `execute_job` (the job must be reconstructable in run workers).

    `home_root` is part of the code pointer on purpose: Dagster caches a reconstructed job by
    its pointer, so without it a second home in the same process would get the first home's
    job (and its warehouse path).
    """
    if home_root is not None and Path(home_root) != home.root:
        raise RuntimeError(f"definitions were loaded for {home.root}, not {home_root}: set CIVICFLOW_HOME before loading")
    return defs.resolve_job_def(NIGHTLY_JOB)
