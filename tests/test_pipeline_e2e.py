"""The spine end to end: a tiny city through the real nightly Dagster job, checked against
the simulator's ground truth, then run again to prove nothing loads twice."""

from __future__ import annotations

import csv
import stat
from pathlib import Path

import duckdb
import polars as pl
import pytest

from governance.publication import data_date_of
from ingest.simulator import simulate
from pipelines.delivery_days import landing_days
from pipelines.nightly import open_instance, rebuild_warehouse, run_nightly
from pipelines.settings import Settings
from warehouse.snapshots import current_snapshot

pytestmark = pytest.mark.slow

EVENT_TABLES = ("telemetry", "pass_scans", "transactions", "clearing")


def scalar(con, sql: str, params=None):
    return con.execute(sql, params or []).fetchone()[0]


@pytest.fixture(scope="module")
def nightly(tmp_path_factory: pytest.TempPathFactory):
    """Simulate a tiny city, run the nightly job twice; yield (home, truth, first, second, counts after run 1)."""
    root = tmp_path_factory.mktemp("e2e")
    settings = Settings.from_env(home=root / "home")
    home = settings.home
    simulate(home.landing, size="tiny", days=28, seed=11)
    truth = {name: pl.read_parquet(home.ground_truth / f"{name}.parquet") for name in ("event_totals", "daily_demand", "faults")}
    first = run_nightly(settings)
    con = duckdb.connect(str(home.warehouse), read_only=True)
    counts = {t: scalar(con, f"SELECT count(*) FROM raw.{t}") for t in EVENT_TABLES}
    con.close()
    second = run_nightly(settings)
    yield settings, truth, first, second, counts


def test_run_succeeds_and_reports_every_stage(nightly):
    settings, _, first, _, _ = nightly
    assert first.success, first.failure
    assert "neighbourhood_demand_daily" in first.marts
    assert first.series > 0 and first.plan_rows > 0
    assert Path(first.plan_path).exists() and Path(first.snapshot).exists()


def test_log_files_carry_no_colour_codes(nightly):
    """The run's log, dbt's dbt.log and Dagster's captured step output are plain text."""
    home = nightly[0].home
    logs = [p for d in (home.logs, home.dbt, home.dagster_storage) for p in d.rglob("*") if p.is_file() and p.suffix in (".log", ".out", ".err")]
    assert any(p.name == "dbt.log" for p in logs), logs
    coloured = [str(p) for p in logs if b"\x1b[" in p.read_bytes()]
    assert not coloured, coloured


def test_raw_rows_equal_valid_distinct_events_of_the_ground_truth(nightly):
    settings, truth, _, _, counts = nightly
    expected = dict(truth["event_totals"].select("contract", "valid_distinct").iter_rows())
    assert counts == {t: expected[t] for t in EVENT_TABLES}


def test_every_bad_row_is_quarantined_and_truncated_files_refused(nightly):
    settings, truth, _, _, _ = nightly
    home = settings.home
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
    settings, truth, _, _, _ = nightly
    home = settings.home
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
    settings, _, first, _, _ = nightly
    home = settings.home
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
    assert sum(int(r["units to stage (units)"]) for r in rows) == plan["units"].sum()  # operations' header


def test_published_snapshot_is_read_only_and_current(nightly):
    settings, _, _, second, _ = nightly
    home = settings.home
    snap = current_snapshot(home.published)
    assert snap is not None and str(snap) == second.snapshot
    assert not snap.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    # the data date every answer reports: the as-of day of the run, the last delivery day
    assert data_date_of(snap) == landing_days(home)[1]
    con = duckdb.connect(str(snap), read_only=True)
    assert scalar(con, "SELECT count(*) FROM marts.neighbourhood_demand_daily") > 0
    con.close()


def test_second_run_loads_no_row_twice(nightly):
    settings, _, _, second, counts = nightly
    home = settings.home
    assert second.success, second.failure
    assert second.ingest == []  # every file was already in the manifest: nothing new attempted
    con = duckdb.connect(str(home.warehouse), read_only=True)
    assert {t: scalar(con, f"SELECT count(*) FROM raw.{t}") for t in EVENT_TABLES} == counts
    per_key = scalar(con, "SELECT count(*) - count(DISTINCT (device_id, seq)) FROM raw.telemetry")
    con.close()
    assert per_key == 0


def test_status_reports_the_run_freshness_quarantine_and_backlog(nightly):
    from pipelines.status import gather

    settings, truth, _, second, _ = nightly
    health = gather(settings)
    assert health.last_run["run_id"] == second.run_id and health.last_run["status"] == "SUCCESS"
    assert health.assets and not health.stale  # everything was just rebuilt
    assert {a.group for a in health.assets} >= {"ingest", "warehouse", "forecasts"}
    assert not health.failed_checks
    row_faults = truth["faults"].filter(pl.col("kind").is_in(["corrupt_line", "wrong_type", "unknown_device"]))
    assert sum(health.quarantine.values()) == row_faults.height
    assert len(health.refused_files) == truth["faults"].filter(pl.col("kind") == "truncated_file").height
    assert health.settlement_backlog["transactions"] >= 1  # the injected never-settled transaction


def test_a_night_with_nothing_new_rebuilds_nothing_and_says_so(nightly):
    """The second run loaded no file: dbt and the forecast did not run (no dbt folder, the plan
    files untouched) and reported their assets and checks as the first run left them."""
    import dagster as dg

    from pipelines.dbt_assets import dbt_run_dir

    settings, _, first, second, _ = nightly
    home = settings.home
    assert second.success, second.failure
    assert set(second.unchanged_since) == {"staging", "intermediate", "marts", "forecasts"}
    assert set(second.unchanged_since.values()) == {first.run_id[:8]}
    assert dbt_run_dir(home.root, first.run_id).is_dir() and not dbt_run_dir(home.root, second.run_id).exists()
    assert second.plan_path == first.plan_path and second.plan_rows == first.plan_rows and second.series == first.series
    with open_instance(settings) as instance:
        def checks(run_id):
            return sorted((e.dagster_event.event_specific_data.asset_key.to_user_string(), e.dagster_event.event_specific_data.check_name,
                           e.dagster_event.event_specific_data.passed)
                          for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION))
        first_checks = checks(first.run_id)
        assert len(first_checks) > 20 and checks(second.run_id) == first_checks
        plan_written = [e.timestamp for e in instance.all_logs(first.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
                        if e.dagster_event.asset_key == dg.AssetKey(["forecasts", "staging_plan"])]
    # The plan's files were written by the first run only.
    assert Path(second.plan_path).stat().st_mtime <= max(plan_written)


def _mart_hashes(home) -> dict[str, str]:
    con = duckdb.connect(str(home.warehouse), read_only=True)
    marts = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'marts' ORDER BY 1").fetchall()]
    hashes = {m: scalar(con, f"SELECT md5(string_agg(t::VARCHAR, '|' ORDER BY t::VARCHAR)) FROM marts.{m} t") for m in marts}
    con.close()
    return hashes


def _export_hashes(home) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(home.exports)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(home.exports.rglob("*")) if p.is_file() and "usage" not in p.parts}


def test_rerunning_a_day_gives_byte_identical_marts_and_exports(nightly):
    settings, _, first, _, _ = nightly
    home = settings.home
    day = landing_last_day(home)
    run_nightly(settings, days=(day, day))
    marts, exports = _mart_hashes(home), _export_hashes(home)
    again = run_nightly(settings, days=(day, day))
    assert again.success, again.failure
    assert _mart_hashes(home) == marts
    assert _export_hashes(home) == exports
    assert any(name.endswith("staging_plan.csv") for name in exports)


def landing_last_day(home):
    return landing_days(home)[1]


def test_late_files_rebuild_only_the_dates_they_touched(nightly):
    """A gateway backlog delivered days late: the sensor requests its delivery day, the run
    rebuilds that day plus the event dates the file touched, and only those dates change."""
    import json
    from datetime import timedelta

    import dagster as dg

    from pipelines.definitions import definitions_for

    settings, _, _, _, _ = nightly
    home = settings.home
    last = landing_last_day(home)
    early = last - timedelta(days=20)
    source = sorted((home.landing / "telemetry" / early.isoformat()).glob("*.jsonl"))[0]
    rows = []
    for line in source.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("kind") == "locker_pickup" and isinstance(row.get("seq"), int):
            rows.append(dict(row, seq=row["seq"] + 900_000_000))  # new natural keys: genuinely new events
    assert rows
    delivery = last + timedelta(days=1)
    cursor_ns = max(p.stat().st_mtime_ns for p in home.landing.rglob("*") if p.is_file())
    late_file = home.landing / "telemetry" / delivery.isoformat() / "telemetry_backlog_gw99.jsonl"
    late_file.parent.mkdir(parents=True)
    late_file.write_text("".join(json.dumps(r) + "\n" for r in rows))

    before = _demand_by_date(home)
    (request,) = list(definitions_for(str(home.root)).resolve_sensor_def("landing_sensor")(dg.build_sensor_context(cursor=json_cursor(cursor_ns))))
    assert request.partition_key == delivery.isoformat()
    report = run_nightly(settings, days=(delivery, delivery))
    assert report.success, report.failure

    con = duckdb.connect(str(home.warehouse), read_only=True)
    touched = {r[0].isoformat() for r in con.execute(
        "SELECT DISTINCT event_date FROM raw.telemetry WHERE seq >= 900000000").fetchall()}
    added = dict(con.execute(
        "SELECT event_date::VARCHAR, sum(value) FROM raw.telemetry WHERE seq >= 900000000 GROUP BY 1").fetchall())
    con.close()
    after = _demand_by_date(home)
    assert touched and delivery.isoformat() not in touched
    for day, units in after.items():
        assert units == before.get(day, 0) + added.get(day, 0), day
    with open_instance(settings) as instance:
        (run,) = instance.get_runs(limit=1)
        (message,) = [e.user_message for e in instance.all_logs(run.run_id) if "rebuild_dates=" in (e.user_message or "")]
    assert set(message.split("rebuild_dates=")[1].split(",")) == {delivery.isoformat()} | touched


def _demand_by_date(home) -> dict[str, float]:
    con = duckdb.connect(str(home.warehouse), read_only=True)
    rows = con.execute("SELECT demand_date::VARCHAR, sum(units) FROM marts.neighbourhood_demand_daily GROUP BY 1").fetchall()
    con.close()
    return dict(rows)


def json_cursor(mtime_ns: int) -> str:
    import json

    return json.dumps({"mtime_ns": mtime_ns})


def date_of(iso: str):
    from datetime import date

    return date.fromisoformat(iso)


def test_analyst_queries_during_a_run_never_fail_nor_see_a_half_built_state(nightly):
    """Queries through the gateway, in a loop, while a nightly run rebuilds and publishes: every
    one succeeds and sees a consistent warehouse (daily and hourly marts agree), and the gateway
    switches to the new snapshot without a restart."""
    import threading
    import time

    from governance.gateway import Gateway
    from governance.keys import create_key
    from governance.rules import load_rules
    from governance.state import GovernanceState
    from pipelines.home import DBT_PROJECT_DIR, PROJECT_ROOT

    settings, _, _, _, _ = nightly
    home = settings.home
    state = GovernanceState(home.governance_db)
    key, _ = create_key(state, "mobility", "concurrency-test")
    gateway = Gateway(state, load_rules(PROJECT_ROOT / "governance_rules"), home.published, DBT_PROJECT_DIR / "target" / "manifest.json")
    sql = (
        "SELECT (SELECT sum(units) FROM marts.neighbourhood_demand_daily) AS daily, "
        "(SELECT sum(units) FROM marts.neighbourhood_demand_hourly) AS hourly"
    )
    results, snapshots, stop = [], set(), threading.Event()

    def analyst():
        while not stop.is_set():
            snapshots.add(current_snapshot(home.published))
            results.append(gateway.query(key, sql))

    before = current_snapshot(home.published)
    worker = threading.Thread(target=analyst)
    worker.start()
    try:
        day = landing_last_day(home)
        report = run_nightly(settings, days=(day, day))
        seen = len(results)
        deadline = time.monotonic() + 60
        while len(results) < seen + 2 and time.monotonic() < deadline:  # queries after the switch
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(timeout=120)
        gateway.close()
        state.close()
    assert report.success, report.failure
    assert current_snapshot(home.published) != before
    assert len(results) >= 5
    failures = [(r.outcome, r.rule, r.message) for r in results if r.outcome != "ok"]
    assert not failures, failures[:3]
    for r in results:
        row = r.table.to_pylist()[0]
        assert row["daily"] == row["hourly"] > 0
    assert {before, current_snapshot(home.published)} <= snapshots  # the loop ran across the switch


def test_rebuild_from_the_landing_archive_gives_the_same_marts(nightly):
    settings, _, _, _, _ = nightly
    home = settings.home
    marts = _mart_hashes(home)
    # A corrupt live file: the rebuild must not even need to open it.
    home.warehouse.write_bytes(b"\x00garbage" * 100)
    moved, report = rebuild_warehouse(settings)
    assert report.success, report.failure
    assert moved is not None and Path(moved).read_bytes().startswith(b"\x00garbage")
    assert _mart_hashes(home) == marts


def test_dbt_models_carry_their_row_counts_in_the_ui(nightly):
    """Every table model's materialization shows its row count in the UI."""
    import dagster as dg

    settings, _, _, _, _ = nightly
    home = settings.home
    # The snapshot of the last run in this module (earlier ones are rotated away).
    con = duckdb.connect(str(current_snapshot(home.published)), read_only=True)
    tables = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' AND table_schema IN ('staging', 'intermediate', 'marts')"
    ).fetchall()
    expected = {(s, t): scalar(con, f'SELECT count(*) FROM "{s}"."{t}"') for s, t in tables}
    con.close()
    assert ("marts", "neighbourhood_demand_daily") in expected
    with open_instance(settings) as instance:
        for (schema, table), rows in expected.items():
            event = instance.get_latest_materialization_event(dg.AssetKey([schema, table]))
            assert event is not None, (schema, table)
            meta = event.asset_materialization.metadata
            assert meta["dagster/row_count"].value == rows, (schema, table)
        # The forecast asset shows its chart: actual days then forecast days with an interval.
        event = instance.get_latest_materialization_event(dg.AssetKey(["forecasts", "demand_forecast"]))
        chart = event.asset_materialization.metadata["forecast chart (city total)"].value
        assert "| actual |" in chart and "| forecast |" in chart and "█" in chart
