"""Daily partitions, shared by every asset of the nightly job.

A partition is a *delivery day* in the city's time zone: ingest loads the files delivered that
day, dbt rebuilds that day plus every event date those files touched (late data), the
forecast runs as of that day and plans the next. A range of days runs as one run
(`BackfillPolicy.single_run()`), which dbt needs for its incremental models.
"""

import warnings
from datetime import date, datetime, timedelta

import dagster as dg

from ingest.contracts import CITY_TZ

# backfill_policy is "beta" in Dagster 1.13; single-run ranges are what dbt needs, on purpose.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

single_run = dg.BackfillPolicy.single_run()


def daily_partitions(start: date, last: date | None = None) -> dg.DailyPartitionsDefinition:
    """The delivery days from `start` (settings.schedule.start_date) to `last`, city-local.

    The definitions pass the last delivered day (`pipelines.delivery_days.landing_days`), so the UI
    shows the days that exist, not every day up to the clock; the daemon reloads its code
    location every minute, so a new day's files make it a partition (the webserver: Reload).
    `last=None` runs to the clock."""
    end = (max(last, start) + timedelta(days=1)).isoformat() if last is not None else None
    return dg.DailyPartitionsDefinition(start_date=start.isoformat(), end_date=end, timezone=CITY_TZ)


def window_dates(start: datetime, end: datetime) -> list[date]:
    """The days of a partition time window [start, end): one for a partition, several for a range."""
    first, stop = start.date(), end.date()
    return [first + timedelta(days=i) for i in range((stop - first).days)] or [first]


def context_dates(context: dg.AssetExecutionContext) -> list[date]:
    window = context.partition_time_window
    return window_dates(window.start, window.end)


def dbt_vars(rebuild: list[date] | None) -> dict:
    """`--vars` for a dbt build: the city's time zone, and the dates the incremental models
    rebuild (`None` = every date, which dbt does when rebuild_dates is unset).

    city_tz is passed on every run so that every dbt run Dagster starts uses CITY_TZ itself, never a
    copy: dbt_project.yml keeps the same value only as the default for dbt run by hand."""
    out: dict = {"city_tz": CITY_TZ}
    if rebuild is not None:
        out["rebuild_dates"] = [d.isoformat() for d in sorted(set(rebuild))]
    return out
