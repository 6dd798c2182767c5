"""The spine end to end: a tiny city through the real nightly Dagster job, checked against
the simulator's ground truth, then run again to prove nothing loads twice."""

from __future__ import annotations

import csv
import os
import stat
from pathlib import Path

import duckdb
import polars as pl
import pytest

from ingest.simulator import simulate
from pipelines.cli import run_nightly
from pipelines.home import home_from_env, prepare_home
from pipelines.publish import current_snapshot

pytestmark = pytest.mark.slow

EVENT_TABLES = ("telemetry", "pass_scans", "transactions", "clearing")


def scalar(con, sql: str, params=None):
    return con.execute(sql, params or []).fetchone()[0]


@pytest.fixture(scope="module")
def nightly(tmp_path_factory: pytest.TempPathFactory):
    """Simulate a tiny city, run the nightly job twice; yield (home, truth, first, second, counts after run 1)."""
    root = tmp_path_factory.mktemp("e2e")
    saved = {k: os.environ.get(k) for k in ("CIVICFLOW_HOME", "DAGSTER_HOME", "CIVICFLOW_WAREHOUSE", "CIVICFLOW_DAGSTER_STORAGE")}
    os.environ["CIVICFLOW_HOME"] = str(root / "home")
    try:
        home = prepare_home(home_from_env())
        simulate(home.landing, size="tiny", days=28, seed=11)
        truth = {name: pl.read_parquet(home.ground_truth / f"{name}.parquet") for name in ("event_totals", "daily_demand", "faults")}
        first = run_nightly(home)
        con = duckdb.connect(str(home.warehouse), read_only=True)
        counts = {t: scalar(con, f"SELECT count(*) FROM raw.{t}") for t in EVENT_TABLES}
        con.close()
        second = run_nightly(home)
        yield home, truth, first, second, counts
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_run_succeeds_and_reports_every_stage(nightly):
    home, _, first, _, _ = nightly
    assert first.success, first.failure
    assert "neighbourhood_demand_daily" in first.marts
    assert first.series > 0 and first.plan_rows > 0
    assert Path(first.plan_path).exists() and Path(first.snapshot).exists()


def test_raw_rows_equal_valid_distinct_events_of_the_ground_truth(nightly):
    home, truth, _, _, counts = nightly
    expected = dict(truth["event_totals"].select("contract", "valid_distinct").iter_rows())
    assert counts == {t: expected[t] for t in EVENT_TABLES}


def test_every_bad_row_is_quarantined_and_truncated_files_refused(nightly):
    home, truth, _, _, _ = nightly
    con = duckdb.connect(str(home.warehouse), read_only=True)
    quarantined = set(con.execute("SELECT file_path, line FROM raw._quarantine").fetchall())
    refused = {r[0] for r in con.execute("SELECT file_path FROM raw._load_manifest WHERE status = 'refused'").fetchall()}
    con.close()
    # Each injected bad row, by file and line (a byte-identical re-delivery is skipped whole, by SHA-256).
    row_faults = truth["faults"].filter(pl.col("kind").is_in(["corrupt_line", "wrong_type", "unknown_device"]))
    assert quarantined == set(row_faults.select("file", "line").iter_rows())
    truncated = set(truth["faults"].filter(pl.col("kind") == "truncated_file")["file"].to_list())
    assert truncated and refused == truncated
    for path in refused:  # refused files stay in the landing zone
        assert (home.landing / path).exists()


def test_demand_mart_matches_staging_and_ground_truth(nightly):
    home, truth, _, _, _ = nightly
    con = duckdb.connect(str(home.warehouse), read_only=True)
    mart_total = scalar(con, "SELECT sum(units) FROM marts.neighbourhood_demand_daily")
    staging_total = scalar(con, "SELECT sum(value) FROM staging.stg_telemetry WHERE reading_kind = 'locker_pickup'")
    assert mart_total == staging_total > 0
    mart = con.execute(
        "SELECT demand_date AS date, neighbourhood_id, category, units FROM marts.neighbourhood_demand_daily"
    ).pl()
    con.close()
    joined = truth["daily_demand"].join(mart, on=["date", "neighbourhood_id", "category"], how="full", coalesce=True)
    assert joined.height == truth["daily_demand"].height == mart.height
    mismatches = joined.filter(pl.col("units").cast(pl.Float64) != pl.col("units_right"))
    assert mismatches.height == 0, mismatches.head()


def test_plan_has_one_row_per_hub_category_day_and_no_negative_units(nightly):
    home, _, first, _, _ = nightly
    con = duckdb.connect(str(home.warehouse), read_only=True)
    hubs_x_categories = scalar(con, "SELECT count(*) FROM marts.hub_capacity")
    plan = con.execute('SELECT hub_id, category, plan_date, "window", units FROM forecasts.staging_plan').pl()
    con.close()
    # Every hub × category × day is planned, split into delivery windows (one row per window).
    cells = plan.select(["hub_id", "category", "plan_date"]).unique()
    assert cells.height == hubs_x_categories * plan["plan_date"].n_unique()
    assert plan.select(["hub_id", "category", "plan_date", "window"]).is_unique().all()
    assert plan["units"].min() >= 0
    with open(first.plan_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == plan.height
    assert sum(int(r["units"]) for r in rows) == plan["units"].sum()


def test_published_snapshot_is_read_only_and_current(nightly):
    home, _, _, second, _ = nightly
    snap = current_snapshot(home.published)
    assert snap is not None and str(snap) == second.snapshot
    assert not snap.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    con = duckdb.connect(str(snap), read_only=True)
    assert scalar(con, "SELECT count(*) FROM marts.neighbourhood_demand_daily") > 0
    con.close()


def test_second_run_loads_no_row_twice(nightly):
    home, _, _, second, counts = nightly
    assert second.success, second.failure
    assert second.ingest == []  # every file was already in the manifest: nothing new attempted
    con = duckdb.connect(str(home.warehouse), read_only=True)
    assert {t: scalar(con, f"SELECT count(*) FROM raw.{t}") for t in EVENT_TABLES} == counts
    per_key = scalar(con, "SELECT count(*) - count(DISTINCT (device_id, seq)) FROM raw.telemetry")
    con.close()
    assert per_key == 0


def test_status_reports_the_run_freshness_quarantine_and_backlog(nightly):
    from pipelines.definitions import defs
    from pipelines.status import gather

    home, truth, _, second, _ = nightly
    health = gather(home, defs)
    assert health.last_run["run_id"] == second.run_id and health.last_run["status"] == "SUCCESS"
    assert health.assets and not health.stale  # everything was just rebuilt
    assert {a.group for a in health.assets} >= {"ingest", "warehouse", "forecasts"}
    assert not health.failed_checks
    row_faults = truth["faults"].filter(pl.col("kind").is_in(["corrupt_line", "wrong_type", "unknown_device"]))
    assert sum(health.quarantine.values()) == row_faults.height
    assert len(health.refused_files) == truth["faults"].filter(pl.col("kind") == "truncated_file").height
    assert health.settlement_backlog["transactions"] >= 1  # the injected never-settled transaction
