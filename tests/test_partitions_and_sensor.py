"""Partition windows → dates and dbt vars; the landing sensor's requests and cursor."""

from __future__ import annotations

import json
import os
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import yaml

from ingest.contracts import CITY_TZ
from pipelines.cli.main import _days_option
from pipelines.nightly import partition_tags
from pipelines.partitions import daily_partitions, dbt_vars, window_dates
from pipelines.sensors import build_landing_sensor, new_deliveries

daily = daily_partitions(date(2026, 1, 1))


def test_window_dates_cover_one_partition_or_a_range():
    assert window_dates(datetime(2026, 1, 5), datetime(2026, 1, 6)) == [date(2026, 1, 5)]
    assert window_dates(datetime(2026, 1, 5), datetime(2026, 1, 8)) == [date(2026, 1, 5), date(2026, 1, 6), date(2026, 1, 7)]


def test_dbt_vars_are_sorted_unique_iso_dates():
    assert dbt_vars([date(2026, 1, 7), date(2026, 1, 2), date(2026, 1, 7)])["rebuild_dates"] == ["2026-01-02", "2026-01-07"]
    assert "rebuild_dates" not in dbt_vars(None)  # unset: dbt rebuilds every date


def test_city_tz_has_one_source():
    # Every dbt run Dagster starts gets CITY_TZ itself (with or without dates), so ingest's
    # event_date and dbt's local dates cannot disagree there; the dbt_project.yml default
    # (for dbt run by hand) is a copy that must stay equal.
    assert dbt_vars([date(2026, 1, 2)])["city_tz"] == CITY_TZ
    assert dbt_vars(None) == {"city_tz": CITY_TZ}
    project = yaml.safe_load((Path(__file__).resolve().parents[1] / "dbt_project" / "dbt_project.yml").read_text())
    assert project["vars"]["city_tz"] == CITY_TZ


def test_partition_tags_for_a_day_and_a_range():
    assert partition_tags(date(2026, 1, 5), date(2026, 1, 5)) == {"dagster/partition": "2026-01-05"}
    assert partition_tags(date(2026, 1, 5), date(2026, 1, 9)) == {
        "dagster/asset_partition_range_start": "2026-01-05",
        "dagster/asset_partition_range_end": "2026-01-09",
    }
    assert _days_option(None, "2026-01-05", "2026-01-09") == (date(2026, 1, 5), date(2026, 1, 9))


def _touch(path: Path, mtime_ns: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x\n")
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_new_deliveries_groups_files_by_delivery_day(tmp_path):
    _touch(tmp_path / "telemetry" / "2026-01-05" / "a.jsonl", 10)
    _touch(tmp_path / "telemetry" / "2026-01-06" / "b.jsonl", 20)
    _touch(tmp_path / "reference" / "hubs" / "hubs.csv", 30)
    days, newest, ref = new_deliveries(tmp_path, after_ns=15)
    assert days == {date(2026, 1, 6): 1} and newest == 30 and ref


def test_sensor_requests_each_new_day_once(tmp_path):
    job = dg.define_asset_job("nightly", partitions_def=daily)
    sensor = build_landing_sensor(job, tmp_path, daily)
    _touch(tmp_path / "telemetry" / "2026-01-05" / "a.jsonl", 10_000)
    _touch(tmp_path / "pass_scans" / "2026-01-06" / "s.csv", 20_000)
    ctx = dg.build_sensor_context(cursor=None)
    requests = list(sensor(ctx))
    assert sorted(r.partition_key for r in requests) == ["2026-01-05", "2026-01-06"]
    assert json.loads(ctx.cursor)["mtime_ns"] == 20_000
    # Nothing new: skip. A late file for an old day: that day again.
    again = sensor(dg.build_sensor_context(cursor=ctx.cursor))
    assert isinstance(again, dg.SkipReason)
    _touch(tmp_path / "telemetry" / "2026-01-05" / "late.jsonl", 30_000)
    (late,) = list(sensor(dg.build_sensor_context(cursor=ctx.cursor)))
    assert late.partition_key == "2026-01-05"


def test_nightly_schedule_runs_the_city_day_that_just_ended():
    from zoneinfo import ZoneInfo

    from pipelines.schedules import build_nightly_schedule, day_that_ended

    # 00:30 in New York is already the next day in Amsterdam: the day that ended is Amsterdam's.
    assert day_that_ended(datetime(2026, 3, 10, 0, 30, tzinfo=ZoneInfo("America/New_York"))) == "2026-03-09"
    assert day_that_ended(datetime(2026, 3, 10, 23, 30, tzinfo=ZoneInfo("America/New_York"))) == "2026-03-10"
    job = dg.define_asset_job("nightly", partitions_def=daily)
    schedule = build_nightly_schedule(job, daily, at="03:15", timezone="America/New_York")
    assert schedule.cron_schedule == "15 3 * * *" and schedule.execution_timezone == "America/New_York"
    ctx = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 2, 2, 3, 15, tzinfo=ZoneInfo("America/New_York")))
    request = schedule(ctx)  # the schedule function itself: no repository needed
    assert isinstance(request, dg.RunRequest) and request.partition_key == "2026-02-01"


def test_freshness_rule_uses_the_last_deadline_and_a_24h_window():
    from zoneinfo import ZoneInfo

    from pipelines.freshness import is_fresh, last_deadline

    ams = ZoneInfo("Europe/Amsterdam")
    now = datetime(2026, 3, 10, 9, 0, tzinfo=ams)
    assert last_deadline(now, "06:00") == datetime(2026, 3, 10, 6, 0, tzinfo=ams)
    assert last_deadline(datetime(2026, 3, 10, 5, 0, tzinfo=ams), "06:00") == datetime(2026, 3, 9, 6, 0, tzinfo=ams)
    assert is_fresh(datetime(2026, 3, 10, 2, 30, tzinfo=ams), now, "06:00")  # last night's run
    assert not is_fresh(datetime(2026, 3, 9, 2, 30, tzinfo=ams), now, "06:00")  # missed a night
    assert not is_fresh(None, now, "06:00")
