"""The Dagster instance on PostgreSQL (production): the real nightly job on a tiny city, its
runs, event log and writer pool in a real PostgreSQL server, nothing in SQLite.

Needs CIVICFLOW_TEST_PG_URL, a libpq URL of a role allowed to create databases (`.ci/run`
starts a server on 127.0.0.1 with `.ci/postgres` and sets it); skipped, with the reason,
without it. Each run of this module works in a database of its own, dropped afterwards.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from support.pg_home import tiny_home_on_postgres

from pipelines.home import PG_URL_ENV

pytestmark = pytest.mark.slow

psycopg2 = pytest.importorskip("psycopg2")


@pytest.fixture(scope="module")
def pg_url(pg_database):
    return pg_database


@pytest.fixture(scope="module")
def nightly_on_postgres(pg_url, tmp_path_factory):
    """Run the nightly job on a tiny city with the home's instance on PostgreSQL; yield (home, report)."""
    from pipelines.nightly import run_nightly

    with tiny_home_on_postgres(tmp_path_factory.mktemp("pg"), pg_url, seed=3) as settings:
        report = run_nightly(settings)
        yield settings, report


def query(url: str, sql: str, params=()) -> list[tuple]:
    con = psycopg2.connect(url)
    try:
        with con.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        con.close()


def test_the_instance_of_the_home_is_postgres_and_holds_no_secret(nightly_on_postgres, pg_url):
    settings, _ = nightly_on_postgres
    home = settings.home
    config = (home.dagster / "dagster.yaml").read_text()
    assert "postgres_url" in config and f"env: {PG_URL_ENV}" in config
    assert "sqlite" not in config
    password = urlsplit(pg_url).password
    assert not password or password not in config


def test_nightly_run_succeeds_and_its_run_row_is_in_postgres(nightly_on_postgres, pg_url):
    _, report = nightly_on_postgres
    assert report.success, report.failure
    rows = query(pg_url, "SELECT status, pipeline_name FROM runs WHERE run_id = %s", (report.run_id,))
    assert rows == [("SUCCESS", "nightly")]


def test_materializations_and_the_event_log_are_in_postgres(nightly_on_postgres, pg_url):
    _, report = nightly_on_postgres
    from dagster import DagsterEventType as Event

    events = dict(query(pg_url, "SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = %s GROUP BY 1", (report.run_id,)))
    assert events.get(Event.RUN_SUCCESS.value) == 1 and events.get(Event.STEP_SUCCESS.value, 0) >= 5, events
    assert events.get(Event.ASSET_CHECK_EVALUATION.value, 0) > 0, events
    materialized = {
        key for (key,) in query(
            pg_url,
            "SELECT DISTINCT asset_key FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
            (report.run_id, Event.ASSET_MATERIALIZATION.value),
        )
    }
    for key in ('["raw", "telemetry"]', '["marts", "neighbourhood_demand_daily"]', '["forecasts", "staging_plan"]', '["published", "warehouse_snapshot"]'):
        assert key in materialized, sorted(materialized)
    # The asset catalogue the UI reads is there too.
    catalogued = {key for (key,) in query(pg_url, "SELECT asset_key FROM asset_keys")}
    assert materialized <= catalogued


def test_the_writer_pool_is_configured_in_the_postgres_instance(nightly_on_postgres, pg_url):
    import dagster as dg
    from dagster_postgres.event_log import PostgresEventLogStorage

    from pipelines.nightly import open_instance

    with pytest.MonkeyPatch.context() as mp:
        settings, report = nightly_on_postgres
        mp.setenv(PG_URL_ENV, pg_url.replace("postgresql://", "postgresql+psycopg2://", 1))
        with open_instance(settings) as instance:
            assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
            info = instance.event_log_storage.get_concurrency_info("warehouse")
            assert info.limit == 1
            assert not info.claimed_slots and not info.pending_steps  # every slot given back after the run
            assert instance.get_run_by_id(report.run_id).status == dg.DagsterRunStatus.SUCCESS
    # The run's steps claimed their slot in PostgreSQL: one pool, one slot, released.
    assert query(pg_url, 'SELECT concurrency_key, "limit" FROM concurrency_limits') == [("warehouse", 1)]
    assert query(pg_url, "SELECT concurrency_key, count(*), count(run_id) FROM concurrency_slots WHERE NOT deleted GROUP BY 1") == [
        ("warehouse", 1, 0)
    ]


def test_nothing_was_written_to_sqlite_under_the_home(nightly_on_postgres):
    settings, _ = nightly_on_postgres
    home = settings.home
    sqlite = [p for p in home.dagster.rglob("*") if p.is_file() and p.read_bytes()[:16] == b"SQLite format 3\x00"]
    assert not sqlite, sqlite
    assert not list(home.dagster.rglob("*.db"))

