"""civicflow's configuration: declared once, typed, read at the edge.

`Settings.from_env()` is called by the CLI and by the Dagster definitions, once, and the parts
are passed down; no module below reads the environment. Every variable is listed in
`VARIABLES` (printed by `civicflow settings`, documented in docs/operations.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

from forecasts.config import VARIABLES as FORECAST_VARIABLES
from forecasts.config import ForecastConfig, forecast_config_from_env
from ingest.config import VARIABLES as INGEST_VARIABLES
from ingest.config import IngestConfig, ingest_config_from_env
from ingest.contracts import CITY_TZ
from pipelines.home import WRITTEN_BY, Home
from warehouse.settings import VARIABLES as WAREHOUSE_VARIABLES
from warehouse.settings import WarehouseSettings, env_value

HOME_ENV = "CIVICFLOW_HOME"
VARIABLES = {
    HOME_ENV: "the runtime home every run writes to (default: the home of DAGSTER_HOME when civicflow wrote it, else ./.civicflow)",
    "DAGSTER_HOME": "Dagster's instance folder, <home>/dagster (civicflow sets it for what it starts); set alone, it names the home",
    **WAREHOUSE_VARIABLES,
    **INGEST_VARIABLES,
    **FORECAST_VARIABLES,
    "CIVICFLOW_START_DATE": "first delivery day of the daily partitions (default 2026-01-01)",
    "CIVICFLOW_NIGHTLY_AT": "city-local time the nightly schedule runs (default 02:30)",
    "CIVICFLOW_NIGHTLY_TZ": f"time zone of that schedule (default {CITY_TZ})",
    "CIVICFLOW_FRESH_BY": "city-local time the night's run must be done by (default 06:00)",
    "CIVICFLOW_CALIBRATION_CRON": "cron of the weekly forecast calibration (default Sundays 23:00)",
    "CIVICFLOW_CALIBRATION_TZ": f"time zone of that cron (default {CITY_TZ})",
    "CIVICFLOW_NOTIFY_WEBHOOK": "a URL that receives each alert's JSON payload by POST (a failed run's included)",
    "CIVICFLOW_NOTIFY_COMMAND": "a command run with each alert's JSON payload on its standard input",
    "CIVICFLOW_ALERTS_FILE": "the alerts file: notifier URLs, thresholds, per-source deadlines (default <home>/alerts.toml)",
    "CIVICFLOW_DAGSTER_PG_URL": "Dagster's run and event storage on PostgreSQL (postgresql+psycopg2://…); unset: SQLite in the home",
    "CIVICFLOW_DBT_MEMORY_LIMIT": "DuckDB memory_limit of dbt's connection (default 6GB; read by dbt_project/profiles.yml)",
    "CIVICFLOW_GATEWAY_URL": "the query gateway the CLI and the Python client talk to (default http://127.0.0.1:8765)",
    "CIVICFLOW_GATEWAY_PG_PORT": "port of the gateway's PostgreSQL wire protocol endpoint on 127.0.0.1 (default 8766; 0 turns it off)",
    "CIVICFLOW_API_KEY": "an analyst's key for `civicflow query` and the Python client",
}


def home_of_dagster(dagster_home: str | None) -> Path | None:
    """The civicflow home a DAGSTER_HOME belongs to: its parent, when civicflow wrote its
    dagster.yaml (pipelines/home.py marks the file); otherwise None."""
    if not dagster_home:
        return None
    config = Path(dagster_home).expanduser() / "dagster.yaml"
    try:
        with config.open() as f:
            first = f.readline()
    except OSError:
        return None
    return config.parent.parent if first.startswith(WRITTEN_BY) else None


@dataclass(frozen=True)
class ScheduleSettings:
    start_date: date = date(2026, 1, 1)
    nightly_at: str = "02:30"
    nightly_tz: str = CITY_TZ
    fresh_by: str = "06:00"
    calibration_cron: str = "0 23 * * 0"
    calibration_tz: str = CITY_TZ


@dataclass(frozen=True)
class NotifySettings:
    webhook: str | None = None
    command: str | None = None
    alerts_file: Path = Path("alerts.toml")  # from_env: <home>/alerts.toml unless CIVICFLOW_ALERTS_FILE


@dataclass(frozen=True)
class Settings:
    home: Home
    warehouse: WarehouseSettings
    ingest: IngestConfig = field(default_factory=IngestConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    dagster_pg_url: str | None = None
    gateway_url: str | None = None
    api_key: str | None = None
    gateway_pg_port: int = 8766

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, home: Path | None = None) -> Settings:
        """The settings of this process: `home` (--home) over $CIVICFLOW_HOME over the home whose
        instance $DAGSTER_HOME is (so plain `dagster-webserver`/`dagster-daemon -m
        pipelines.definitions` with only DAGSTER_HOME set work on that home) over ./.civicflow."""
        env = os.environ if env is None else env
        root = Path(home if home is not None else env.get(HOME_ENV) or home_of_dagster(env.get("DAGSTER_HOME")) or "./.civicflow")
        root = root.expanduser().resolve()

        def get(name: str) -> str | None:
            return env_value(env, name)

        defaults = ScheduleSettings()
        start_date = date.fromisoformat(get("CIVICFLOW_START_DATE") or defaults.start_date.isoformat())
        return cls(
            home=Home(root),
            warehouse=WarehouseSettings.from_env(env, root),
            ingest=replace(ingest_config_from_env(env), first_day=start_date),
            forecast=forecast_config_from_env(env),
            schedule=ScheduleSettings(
                start_date=start_date,
                nightly_at=get("CIVICFLOW_NIGHTLY_AT") or defaults.nightly_at,
                nightly_tz=get("CIVICFLOW_NIGHTLY_TZ") or defaults.nightly_tz,
                fresh_by=get("CIVICFLOW_FRESH_BY") or defaults.fresh_by,
                calibration_cron=get("CIVICFLOW_CALIBRATION_CRON") or defaults.calibration_cron,
                calibration_tz=get("CIVICFLOW_CALIBRATION_TZ") or defaults.calibration_tz,
            ),
            notify=NotifySettings(
                webhook=get("CIVICFLOW_NOTIFY_WEBHOOK"), command=get("CIVICFLOW_NOTIFY_COMMAND"),
                alerts_file=Path(get("CIVICFLOW_ALERTS_FILE") or Home(root).alerts_file).expanduser(),
            ),
            dagster_pg_url=get("CIVICFLOW_DAGSTER_PG_URL"),
            gateway_url=get("CIVICFLOW_GATEWAY_URL"),
            api_key=get("CIVICFLOW_API_KEY"),
            gateway_pg_port=int(get("CIVICFLOW_GATEWAY_PG_PORT") or 8766),
        )
