"""The warehouse on DuckLake: a PostgreSQL catalog plus Parquet files on a (shared) data path.

The same tiny city runs through the real nightly Dagster job twice over: once on the local
DuckDB file (the default), once with CIVICFLOW_WAREHOUSE_CATALOG pointing at a fresh database
of a real PostgreSQL server and CIVICFLOW_WAREHOUSE_DATA at a directory outside the home. The
lake must hold what the file holds (raw tables, marts, forecasts, the plan's bytes), load
nothing twice on a second run, publish a DuckLake snapshot *version* the gateway answers
analysts from (locked down: no files, no catalog credentials), and keep its data as Parquet
under the data path.

Needs CIVICFLOW_TEST_PG_URL, a libpq URL of a role allowed to create databases (`.ci/run`
starts a server on 127.0.0.1 with `.ci/postgres` and sets it); skipped, with the reason,
without it. The module works in a database of its own, dropped afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import pytest

from ingest.simulator import simulate
from pipelines.home import PG_URL_ENV, Home
from pipelines.nightly import RunReport, run_nightly
from pipelines.settings import Settings
from warehouse.backends import DBT_LAKE_ENV, Backend, backend_for
from warehouse.settings import CATALOG_ENV, DATA_ENV, READER_CATALOG_ENV
from warehouse.snapshots import LAKE_SUFFIX, LakeSnapshot, current_snapshot

pytestmark = pytest.mark.slow

psycopg2 = pytest.importorskip("psycopg2")

PROJECT = Path(__file__).resolve().parent.parent
# Variables a run reads (or dbt's child environment holds): recorded and restored around the module.
ENV_VARS = ("CIVICFLOW_HOME", "DAGSTER_HOME", "CIVICFLOW_WAREHOUSE", CATALOG_ENV, READER_CATALOG_ENV, DATA_ENV, PG_URL_ENV, *DBT_LAKE_ENV.values())
DEMAND = "marts.neighbourhood_demand_daily"


@pytest.fixture(scope="module")
def pg_url(pg_database):
    """A fresh database for the lake's catalog (tests/conftest.py; skips without a server)."""
    return pg_database


@dataclass
class Runs:
    file_home: Home
    lake_home: Home
    lake: Backend
    on_file: RunReport
    first: RunReport
    second: RunReport
    raw_after_first: dict[str, int]


def _city() -> Settings:
    settings = Settings.from_env()
    simulate(settings.home.landing, size="tiny", days=5, seed=3)
    return settings


@pytest.fixture(scope="module")
def runs(pg_url, tmp_path_factory) -> Runs:
    root = tmp_path_factory.mktemp("ducklake")
    with pytest.MonkeyPatch.context() as mp:
        for var in ENV_VARS:  # setenv records the value to restore, delenv starts from nothing
            mp.setenv(var, "")
            mp.delenv(var)
        # The reference: the default backend, the local DuckDB file.
        mp.setenv("CIVICFLOW_HOME", str(root / "file"))
        file_settings = _city()
        file_home = file_settings.home
        on_file = run_nightly(file_settings)
        # The same city on DuckLake, its data on a path outside the home (as a shared mount would be).
        mp.setenv(CATALOG_ENV, pg_url)
        mp.setenv(DATA_ENV, str(root / "shared" / "lake"))
        mp.setenv("CIVICFLOW_HOME", str(root / "lake"))
        lake_settings = _city()
        lake_home = lake_settings.home
        lake = backend_for(lake_settings.warehouse)
        assert lake.kind == "ducklake" and lake.data_path == root / "shared" / "lake"
        first = run_nightly(lake_settings)
        con = lake.connect(read_only=True)
        raw_after_first = {t: con.execute(f"SELECT count(*) FROM raw.{t}").fetchone()[0] for t in relations(con, "raw")}
        con.close()
        second = run_nightly(lake_settings)
        print(f"\nnightly run, tiny city (5 days): file {on_file.seconds:.1f} s; DuckLake {first.seconds:.1f} s, second run {second.seconds:.1f} s")
        yield Runs(file_home, lake_home, lake, on_file, first, second, raw_after_first)


@pytest.fixture
def both(runs: Runs):
    """(file warehouse, lake) read-only connections, closed after the test."""
    file_con = duckdb.connect(str(runs.file_home.warehouse), read_only=True)
    lake_con = runs.lake.connect(read_only=True)
    yield file_con, lake_con
    file_con.close()
    lake_con.close()


def rows(con, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def relations(con, schema: str) -> list[str]:
    return [r[0] for r in rows(con, f"SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = '{schema}' ORDER BY 1")]


def test_every_stage_runs_on_the_lake_and_publishes_a_lake_version(runs: Runs) -> None:
    assert runs.on_file.success, runs.on_file.failure
    assert runs.first.success, runs.first.failure
    assert runs.second.success, runs.second.failure
    assert runs.first.marts == runs.on_file.marts and runs.first.series == runs.on_file.series > 0
    snap = current_snapshot(runs.lake_home.published)
    assert snap is not None and snap.name.endswith(LAKE_SUFFIX) and str(snap) == runs.second.snapshot
    # The second run found nothing new: dbt and the forecast rebuilt nothing (pipelines.unchanged),
    # so the lake has no new version to publish, and the new snapshot attaches the same one.
    assert set(runs.second.unchanged_since) == {"staging", "intermediate", "marts", "forecasts"}
    assert LakeSnapshot.read(snap).version == LakeSnapshot.read(Path(runs.first.snapshot)).version
    assert LakeSnapshot.read(snap).published_at > LakeSnapshot.read(Path(runs.first.snapshot)).published_at
    assert not runs.lake_home.warehouse.exists()  # nothing went to a local DuckDB file


def test_raw_tables_in_the_lake_equal_the_local_file(runs: Runs, both) -> None:
    file_con, lake_con = both
    tables = relations(file_con, "raw")
    assert tables == relations(lake_con, "raw") and "telemetry" in tables
    varying = {"_loaded_at", "quarantined_at", "started_at", "finished_at", "duration_ms", "mtime_ns"}  # when, not what
    for table in tables:
        if table == "_step_state":  # which run built what, and where its files went: per home, not data
            continue
        cols = [c for (c,) in rows(file_con, f"SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = 'raw' AND table_name = '{table}' ORDER BY column_index") if c not in varying]
        sql = f"SELECT {', '.join(cols)} FROM raw.{table} ORDER BY ALL"
        assert rows(lake_con, sql) == rows(file_con, sql), table


def test_marts_and_demand_totals_in_the_lake_equal_the_local_file(both) -> None:
    file_con, lake_con = both
    marts = relations(file_con, "marts")
    assert marts == relations(lake_con, "marts") and "neighbourhood_demand_daily" in marts
    for mart in marts:
        sql = f"SELECT * FROM marts.{mart} ORDER BY ALL"
        assert rows(lake_con, sql) == rows(file_con, sql), mart
    totals = f"SELECT count(*), sum(units), sum(pickup_readings), count(DISTINCT neighbourhood_id) FROM {DEMAND}"
    (lake_totals,) = rows(lake_con, totals)
    assert lake_totals == rows(file_con, totals)[0] and lake_totals[1] > 0


def test_forecasts_and_the_staging_plan_equal_the_local_file(runs: Runs, both) -> None:
    file_con, lake_con = both
    for table in ("demand_forecast", "staging_plan"):
        sql = f"SELECT * FROM forecasts.{table} ORDER BY ALL"
        assert rows(lake_con, sql) == rows(file_con, sql), table
    lake_plan, file_plan = Path(runs.first.plan_path), Path(runs.on_file.plan_path)
    assert lake_plan.name == file_plan.name and lake_plan.read_bytes() == file_plan.read_bytes()


def test_second_run_loads_no_row_twice(runs: Runs, both) -> None:
    _, lake_con = both
    assert runs.second.ingest == []  # every file already in the lake's manifest
    assert {t: rows(lake_con, f"SELECT count(*) FROM raw.{t}")[0][0] for t in runs.raw_after_first} == runs.raw_after_first


def test_data_files_are_parquet_under_the_data_path(runs: Runs, both) -> None:
    _, lake_con = both
    data = runs.lake.data_path
    assert rows(lake_con, "SELECT value FROM ducklake_options('lake') WHERE option_name = 'data_path'")[0][0] == f"{data}/"
    files = [
        Path(f)
        for schema, table in (("raw", "telemetry"), ("marts", "neighbourhood_demand_daily"), ("forecasts", "staging_plan"))
        for (f,) in rows(lake_con, f"SELECT data_file FROM ducklake_list_files('lake', '{table}', schema => '{schema}')")
    ]
    assert files
    for f in files:
        assert f.is_relative_to(data) and f.suffix == ".parquet", f
        assert f.read_bytes()[:4] == b"PAR1", f
    # DuckLake's own files (ducklake-<uuid>.parquet) are under the data path only, none in the home.
    assert len(list(data.rglob("ducklake-*.parquet"))) >= len(files)
    assert not list(runs.lake_home.root.rglob("ducklake-*"))


def test_status_reads_the_published_lake_version(runs: Runs) -> None:
    from pipelines.status import Health, _from_snapshot

    on_lake, on_file = Health(), Health()
    _from_snapshot(on_lake, current_snapshot(runs.lake_home.published), Settings.from_env(home=runs.lake_home.root))
    _from_snapshot(on_file, current_snapshot(runs.file_home.published), Settings.from_env(home=runs.file_home.root))
    assert on_lake.last_delivery == on_file.last_delivery and on_lake.last_delivery
    assert (on_lake.quarantine, on_lake.refused_files) == (on_file.quarantine, on_file.refused_files)
    assert on_lake.settlement_backlog == on_file.settlement_backlog


@pytest.fixture
def gateway(runs: Runs, tmp_path: Path):
    from governance.gateway import Gateway
    from governance.keys import create_key
    from governance.rules import load_rules
    from governance.state import GovernanceState

    state = GovernanceState(tmp_path / "governance.duckdb")
    key, _ = create_key(state, "mobility", "lake-analyst")
    gw = Gateway(
        state, load_rules(PROJECT / "governance_rules"), runs.lake_home.published, PROJECT / "dbt_project" / "target" / "manifest.json",
        credentials=(runs.lake.catalog,),
    )
    yield gw, key
    gw.close()
    state.close()


def test_gateway_answers_an_analyst_from_the_published_lake_version(gateway, both) -> None:
    gw, key = gateway
    file_con, _ = both
    sql = f"SELECT category, sum(units) AS units FROM {DEMAND} GROUP BY category ORDER BY category"
    result = gw.query(key, sql)
    assert result.outcome == "ok", (result.rule, result.message)
    assert [tuple(r.values()) for r in result.table.to_pylist()] == rows(file_con, sql)
    assert result.tables == [DEMAND] and 0 < result.actual <= result.estimate
    # A mart whose name a raw table shares (raw.hub_capacity): the plan still names the right one.
    shared = gw.query(key, "SELECT category, sum(capacity_units) FROM marts.hub_capacity GROUP BY 1")
    assert shared.outcome == "ok" and shared.tables == ["marts.hub_capacity"], (shared.rule, shared.message)
    for refused in ("SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM raw.hub_capacity", "SELECT * FROM postgres_query('__ducklake_metadata_lake', 'SELECT 1')"):
        result = gw.query(key, refused)
        assert result.outcome == "refused" and result.table is None, refused


def test_sandbox_on_the_lake_reads_no_file_and_no_catalog_secret(runs: Runs, pg_url) -> None:
    from governance.sandbox import Sandbox

    password = urlsplit(pg_url).password
    assert password
    snap = current_snapshot(runs.lake_home.published)
    for published in runs.lake_home.published.rglob("*"):  # the teams' files too
        assert not published.is_file() or password.encode() not in published.read_bytes()
    sb = Sandbox(snap, credentials=(runs.lake.catalog,))
    try:
        with sb.connection() as cur:
            with pytest.raises(duckdb.PermissionException):
                cur.execute("SELECT * FROM read_csv('/etc/passwd')").fetchall()
            with pytest.raises(duckdb.PermissionException):
                cur.execute(f"SELECT * FROM read_text('{runs.lake_home.root / 'published' / snap.name}')").fetchall()
            with pytest.raises(duckdb.Error):
                cur.execute("SET enable_external_access = true")
            with pytest.raises(duckdb.Error):
                cur.execute(f"ATTACH '{runs.file_home.warehouse}' AS other (READ_ONLY)")
            with pytest.raises(duckdb.Error):
                cur.execute("INSERT INTO marts.dim_categories SELECT * FROM marts.dim_categories")
            seen = " ".join(
                str(rows(cur, sql))
                for sql in ("SELECT * FROM duckdb_secrets()", "SELECT * FROM duckdb_databases()", "SELECT * FROM duckdb_settings()")
            )
            assert password not in seen and "redacted" in seen
            assert rows(cur, f"SELECT count(*) FROM {DEMAND}")[0][0] > 0
    finally:
        sb.close()


# ---------------------------------------------------------------- every team, both backends
# What each team in governance_rules/ would honestly ask, on the snapshot the real nightly
# published (with the relations built for each team), on the file and on the lake alike.
TEAMS = ("finance", "mobility", "onboarding")


@pytest.fixture(params=["file", "lake"])
def team_gateway(request, runs: Runs, tmp_path: Path):
    from governance.gateway import Gateway
    from governance.keys import create_key
    from governance.rules import load_rules
    from governance.state import GovernanceState

    home = runs.file_home if request.param == "file" else runs.lake_home
    state = GovernanceState(tmp_path / "governance.duckdb")
    keys = {team: create_key(state, team, f"{team}-analyst")[0] for team in TEAMS}
    gw = Gateway(state, load_rules(PROJECT / "governance_rules"), home.published, PROJECT / "dbt_project" / "target" / "manifest.json",
                 credentials=(runs.lake.catalog,))
    live = duckdb.connect(str(runs.file_home.warehouse), read_only=True)  # the truth: both backends hold the same city
    yield gw, keys, live
    live.close()
    gw.close()
    state.close()


def _ok(gw, key: str, sql: str) -> list[tuple]:
    result = gw.query(key, sql)
    assert result.outcome == "ok", (sql, result.rule, result.message)
    return [tuple(r.values()) for r in result.table.to_pylist()]


def test_finance_reconciles_settlements(team_gateway) -> None:
    gw, keys, live = team_gateway
    sql = "SELECT reconciliation_class, sum(items) AS items, sum(variance_cents) AS variance FROM marts.settlement_reconciliation_daily GROUP BY 1 ORDER BY 1"
    assert _ok(gw, keys["finance"], sql) == rows(live, sql) and rows(live, sql)


def test_mobility_reads_demand_and_the_funnel_in_cells(team_gateway) -> None:
    gw, keys, live = team_gateway
    sql = f"SELECT category, sum(units) AS units FROM {DEMAND} GROUP BY category ORDER BY category"
    assert _ok(gw, keys["mobility"], sql) == rows(live, sql)
    # the funnel's cells merge small ones but keep every total: passes per type are exact
    funnel = "SELECT pass_type, sum(passes_issued) AS n FROM marts.pass_onboarding_funnel GROUP BY 1 ORDER BY 1"
    assert _ok(gw, keys["mobility"], funnel) == rows(live, funnel)
    per_home = _ok(gw, keys["mobility"], "SELECT home_neighbourhood_id, issue_month, sum(passes_issued) AS n FROM marts.pass_onboarding_funnel GROUP BY ALL")
    assert per_home and all(n >= 10 for *_, n in per_home)  # mobility's min_group_size


def test_onboarding_reads_the_dims_and_birth_years_in_cells_never_rows(team_gateway) -> None:
    gw, keys, live = team_gateway
    key = keys["onboarding"]
    # this was a 500: the granted view named the live warehouse's catalog
    assert _ok(gw, key, "SELECT count(*) FROM marts.dim_hubs") == rows(live, "SELECT count(*) FROM marts.dim_hubs")
    passes = rows(live, "SELECT count(*) FROM staging.stg_pass_onboarding")[0][0]
    years = _ok(gw, key, "SELECT birth_year, sum(holders) AS n FROM staging.stg_pass_onboarding GROUP BY 1")
    assert sum(n for _, n in years) == passes and all(n >= 10 for _, n in years)
    assert _ok(gw, key, "SELECT sum(passes_issued) FROM marts.pass_onboarding_funnel") == [(passes,)]
    # no rows about one pass holder: not raw, not the view's rows, not listed through a cross join
    pass_ids = {r[0] for r in rows(live, "SELECT pass_id FROM staging.stg_pass_onboarding")}
    for sql in ("SELECT * FROM raw.pass_onboarding", "SELECT pass_id FROM staging.stg_pass_onboarding",
                "SELECT s.* FROM staging.stg_pass_onboarding s, marts.dim_hubs h", "SELECT * FROM query_table('raw.pass_onboarding')"):
        result = gw.query(key, sql)
        got = result.table.to_pylist() if result.table is not None else []
        assert len(got) < passes and not pass_ids & {v for r in got for v in r.values()}, sql


def test_published_version_is_pinned_and_rotation_expires_old_versions(runs: Runs) -> None:
    """Runs last: it commits to the lake after the published version."""
    from contextlib import nullcontext

    from governance.sandbox import Sandbox

    published = runs.lake_home.published
    before = LakeSnapshot.read(current_snapshot(published)).version
    first = LakeSnapshot.read(Path(runs.first.snapshot)).version
    con = runs.lake.connect()
    try:
        con.execute("CREATE TABLE main.after_publish AS SELECT 1 AS x")
        sb = Sandbox(current_snapshot(published), credentials=(runs.lake.catalog,))
        try:
            with sb.connection() as cur:  # readers stay on the published version
                assert rows(cur, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'after_publish'")[0][0] == 0
        finally:
            sb.close()
        snap = runs.lake.publish(published, lambda: nullcontext(con), keep=1).path
        assert current_snapshot(published) == snap and LakeSnapshot.read(snap).version > before
        assert sorted(p.name for p in published.glob(f"*{LAKE_SUFFIX}")) == [snap.name]
        alive = {r[0] for r in rows(con, "SELECT snapshot_id FROM ducklake_snapshots('lake')")}
        assert LakeSnapshot.read(snap).version in alive and first not in alive and before not in alive
    finally:
        con.close()
    sb = Sandbox(current_snapshot(published), credentials=(runs.lake.catalog,))
    try:
        with sb.connection() as cur:
            assert rows(cur, "SELECT x FROM main.after_publish") == [(1,)]
    finally:
        sb.close()


def test_operator_commands_read_the_lake(runs: Runs, pg_url, tmp_path: Path) -> None:
    """`civicflow ingest data-docs`, `ingest quarantine` and `forecast report` answer from the
    lake as they do from the file: the same rows validated, the same quarantined rows, a
    report and a workbook of the lake's plan."""
    from typer.testing import CliRunner

    from ingest.data_docs import build_data_docs, quarantine_rows
    from pipelines.cli import app
    from warehouse.snapshots import open_snapshot

    def opened(home: Home):
        return open_snapshot(current_snapshot(home.published), (runs.lake.catalog,))

    docs = {}
    for name, home in (("lake", runs.lake_home), ("file", runs.file_home)):
        with opened(home) as snap:
            docs[name] = build_data_docs(snap.con, tmp_path / name, days=7)
    checked = {name: [(t.contract, t.rows_checked, t.success) for t in d.tables] for name, d in docs.items()}
    assert checked["lake"] == checked["file"] and sum(n for _, n, _ in checked["lake"]) > 0
    assert docs["lake"].index_html.is_file()

    with opened(runs.lake_home) as lake_snap, opened(runs.file_home) as file_snap:
        on_lake = quarantine_rows(lake_snap.con, limit=1000)
        on_file = quarantine_rows(file_snap.con, limit=1000)
    key = lambda r: (r["contract"], Path(r["file_path"]).name, r["line"], r["field"], r["reason"], r["raw_text"])  # noqa: E731
    assert sorted(map(key, on_lake)) == sorted(map(key, on_file))  # this small city quarantines none

    env = {CATALOG_ENV: pg_url, DATA_ENV: str(runs.lake.data_path)}
    out = CliRunner().invoke(app, ["ingest", "quarantine", "--home", str(runs.lake_home.root)], env=env)
    assert out.exit_code == 0, out.output
    assert f"Quarantined rows ({min(len(on_file), 50)} shown" in out.output

    out = CliRunner().invoke(app, ["forecast", "report", "--home", str(runs.lake_home.root)], env=env)
    assert out.exit_code == 0, out.output
    report = Path(out.output.split("report:", 1)[1].split()[0])
    workbook = Path(out.output.split("workbook:", 1)[1].split()[0])
    assert report.is_file() and report.is_relative_to(runs.lake_home.exports) and workbook.is_file()
    with runs.lake.connect(read_only=True) as con:
        as_of = con.execute("select max(as_of) from forecasts.staging_plan").fetchone()[0]
    assert as_of.isoformat() in report.read_text()
