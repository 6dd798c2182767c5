"""The nightly schedule: at a configurable time and time zone, run the day that just ended.

The day is the city's local day (the partition), whatever zone the schedule ticks in, so an
operator in another zone can move the run without moving the data's day boundaries.
"""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from ingest.contracts import CITY_TZ


def day_that_ended(tick: datetime) -> str:
    """The city-local calendar day before the tick: the partition a nightly tick runs."""
    local = tick.astimezone(ZoneInfo(CITY_TZ))
    return (local.date() - timedelta(days=1)).isoformat()


def build_nightly_schedule(
    job, partitions_def: dg.DailyPartitionsDefinition, at: str = "02:30", timezone: str = CITY_TZ
) -> dg.ScheduleDefinition:
    hour, minute = (int(x) for x in at.split(":"))

    @dg.schedule(
        name="nightly_schedule",
        job=job,
        cron_schedule=f"{minute} {hour} * * *",
        execution_timezone=timezone,
        description=f"Runs the whole job for the city day that just ended, every day at {hour:02d}:{minute:02d} {timezone}.",
    )
    def nightly_schedule(context: dg.ScheduleEvaluationContext):
        day = day_that_ended(context.scheduled_execution_time)
        if day not in set(partitions_def.get_partition_keys(current_time=context.scheduled_execution_time)):
            return dg.SkipReason(f"{day} is not a partition (before CIVICFLOW_START_DATE or in the future)")
        return dg.RunRequest(run_key=day, partition_key=day)

    return nightly_schedule
