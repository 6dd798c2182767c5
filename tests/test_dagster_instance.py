"""The Dagster instance of a home (SQLite by default, PostgreSQL by configuration), and what
the long-running Dagster processes may touch: the webserver, the daemon (schedules, sensors)
and the code server load the definitions and evaluate ticks without ever opening the live
warehouse; only steps in the writer pool do (DESIGN.md "One writer")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.home import DAGSTER_YAML, PG_URL_ENV, PROJECT_ROOT, Home, instance_yaml, prepare_home
from pipelines.nightly import open_instance
from pipelines.settings import Settings


def test_sqlite_under_the_home_by_default(home_dir, monkeypatch):
    monkeypatch.delenv(PG_URL_ENV, raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    settings = Settings.from_env()
    home = settings.home
    with open_instance(settings) as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert Path(instance.root_directory) == home.dagster / "storage"
    written, base = yaml.safe_load((home.dagster / "dagster.yaml").read_text()), yaml.safe_load(DAGSTER_YAML.read_text())
    # The home's file names its own storage, so `dagster` with only DAGSTER_HOME set finds it.
    assert written["storage"] == {
        "custom": {"module": "pipelines.instance_storage", "class": "SerialInitSqliteStorage", "config": {"base_dir": str(home.dagster / "storage")}}
    }
    assert {k: v for k, v in written.items() if k not in ("storage", "local_artifact_storage")} == {
        k: v for k, v in base.items() if k not in ("storage", "local_artifact_storage")
    }


def test_plain_dagster_commands_work_with_only_dagster_home_set(home_dir):
    """What docs/operations.md tells the data team to run, with no civicflow variable set."""
    settings = Settings.from_env()
    prepare_home(settings.home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIVICFLOW_")} | {"DAGSTER_HOME": str(settings.home.dagster)}
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run([str(dagster), "instance", "concurrency", "get", "warehouse"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"warehouse"' in done.stdout, done.stdout  # the pool's slots are allocated by its first step


def _open_at_once(dagster_home: str, barrier, errors) -> None:
    import dagster as dg

    barrier.wait()  # every process opens the fresh instance at the same moment
    try:
        with dg.DagsterInstance.from_config(dagster_home) as instance:
            instance.get_runs(limit=1)
            instance.all_logs("0" * 32)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        errors.put(f"{type(exc).__name__}: {str(exc)[:300]}")


def _assert_four_processes_open_it_at_once(home: Home) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    barrier, errors = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open_at_once, args=(str(home.dagster), barrier, errors)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found, found
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]


@pytest.mark.slow
def test_processes_opening_a_fresh_home_at_once_leave_one_alembic_head(tmp_path):
    """The race behind "Version table 'alembic_version' has more than one head present": with
    Dagster's plain SQLite storage, four processes opening a fresh home together left two
    alembic rows in runs.db or schedules.db in 3 of 8 tries (and failed with "table ... already
    exists" 13 times). The home's storage initialises under a lock: every process succeeds and
    every file has one head."""
    import sqlite3

    for attempt in range(3):
        home = prepare_home(Home(tmp_path / f"home{attempt}"))
        _assert_four_processes_open_it_at_once(home)
        dbs = sorted(home.dagster_storage.rglob("*.db"))
        assert {db.name for db in dbs} >= {"runs.db", "schedules.db", "index.db"}
        for db in dbs:
            with sqlite3.connect(db) as con:
                assert con.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1, db


@pytest.mark.slow
def test_processes_opening_a_fresh_postgres_instance_at_once_all_succeed(tmp_path, pg_database, monkeypatch):
    """The same race on PostgreSQL: with Dagster's plain PostgreSQL storage, a daemon and a
    `dagster job launch` opening a fresh database together failed with `type "instigators"
    already exists` (the daemon died, tests/test_dagster_deployment.py at load average 4; on an
    idle machine four processes did not hit it). The storage initialises under an advisory
    lock: four processes at once all open it, and one set of tables is there."""

    import psycopg2

    monkeypatch.setenv(PG_URL_ENV, pg_database.replace("postgresql://", "postgresql+psycopg2://", 1))
    home = prepare_home(Home(tmp_path / "home"), os.environ[PG_URL_ENV])
    _assert_four_processes_open_it_at_once(home)
    con = psycopg2.connect(pg_database)
    try:
        with con.cursor() as cur:
            cur.execute("SELECT count(*) FROM alembic_version")
            assert cur.fetchone()[0] == 1
            cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_name IN ('runs', 'event_logs', 'instigators')")
            assert cur.fetchone()[0] == 3
    finally:
        con.close()


def test_postgres_by_configuration_keeps_everything_else_of_dagster_yaml(home_dir):
    home = Home(home_dir)
    written = instance_yaml(home, "postgresql+psycopg2://u:s3cret@127.0.0.1:5432/d")
    assert "s3cret" not in written  # the URL is read from the environment when the instance loads
    config, sqlite = yaml.safe_load(written), yaml.safe_load(instance_yaml(home, None))
    assert config["storage"] == {
        "custom": {"module": "pipelines.pg_instance_storage", "class": "SerialInitPostgresStorage", "config": {"postgres_url": {"env": PG_URL_ENV}}}
    }
    assert {k: v for k, v in config.items() if k != "storage"} == {k: v for k, v in sqlite.items() if k != "storage"}
    assert config["concurrency"]["pools"]["default_limit"] == 1


def test_a_url_without_its_driver_is_refused_with_the_fix(home_dir):
    with pytest.raises(ValueError, match=r"postgresql\+psycopg2://"):
        instance_yaml(Home(home_dir), "postgresql://u:p@127.0.0.1:5432/d")


# What a Dagster process other than a run worker does with the definitions, in a fresh process
# and a fresh home: every duckdb.connect() is recorded.
DAEMON_AND_WEBSERVER = r"""
import json, sys
from datetime import datetime, timezone

import duckdb

opened = []
_connect = duckdb.connect
def spy(database=":memory:", *args, **kwargs):
    opened.append(str(database))
    return _connect(database, *args, **kwargs)
duckdb.connect = spy

import dagster as dg
from ingest.simulator import simulate
from pipelines.nightly import open_instance
from pipelines.settings import Settings

settings = Settings.from_env()
simulate(settings.home.landing, size="tiny", days=3, seed=5)  # files for the landing sensor to find

import pipelines.definitions as d  # what the webserver and daemon load

defs = d.definitions_for()
defs.resolve_asset_graph()
for job in defs.resolve_all_job_defs():
    job.graph.nodes
ticks = {}
with open_instance(settings) as instance:
    repo = defs.get_repository_def()
    for sensor in repo.sensor_defs:
        result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, repository_def=repo))
        ticks[sensor.name] = len(result.run_requests or [])
    for schedule in repo.schedule_defs:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime.now(timezone.utc), repository_def=repo)
        ticks[schedule.name] = len(schedule.evaluate_tick(context).run_requests or [])
print(json.dumps({"opened": opened, "ticks": ticks}))
"""


@pytest.mark.slow
def test_loading_definitions_and_evaluating_sensors_and_schedules_never_open_the_warehouse(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "CIVICFLOW_WAREHOUSE", "CIVICFLOW_DAGSTER_STORAGE", PG_URL_ENV)}
    env["CIVICFLOW_HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-c", DAEMON_AND_WEBSERVER], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ticks"]["landing_sensor"] > 0, result  # the sensor did look at the files
    assert not [p for p in result["opened"] if "warehouse" in p], result["opened"]
    assert not (home / "warehouse.duckdb").exists()
    assert not list(home.rglob("*.duckdb")), list(home.rglob("*.duckdb"))


@pytest.mark.slow
def test_dagster_ui_code_location_loads_without_creating_the_warehouse(tmp_path):
    """`dagster definitions validate` loads the code location the way the webserver does."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "CIVICFLOW_WAREHOUSE", "CIVICFLOW_DAGSTER_STORAGE", PG_URL_ENV)}
    env.update(CIVICFLOW_HOME=str(home), DAGSTER_HOME=str(home / "dagster"))
    prepare = [sys.executable, "-c", "from pipelines.home import prepare_home; from pipelines.settings import Settings; prepare_home(Settings.from_env().home)"]
    subprocess.run(prepare, cwd=PROJECT_ROOT, env=env, check=True, timeout=120)
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "pipelines.definitions"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert not list(home.rglob("*.duckdb")), list(home.rglob("*.duckdb"))


def test_every_step_that_can_open_the_warehouse_runs_in_the_writer_pool(home_dir):
    """Run workers open the warehouse only through the `warehouse` (WarehouseResource) or `dbt`
    resources: every node of every job that requires one of them is in the writer pool."""
    from pipelines.definitions import definitions_for

    outside = []
    for job in definitions_for(str(home_dir)).resolve_all_job_defs():
        for node in job.graph.nodes:
            needs = node.definition.required_resource_keys & {"warehouse", "dbt"}
            if needs and node.definition.pool != "warehouse":
                outside.append((job.name, node.name, sorted(needs), node.definition.pool))
    assert not outside, outside


@pytest.mark.slow
def test_the_code_location_with_only_dagster_home_set_works_on_that_home(tmp_path):
    """`dagster definitions validate -m pipelines.definitions` (what dagster-webserver and
    dagster-daemon load) from another folder, with no civicflow variable: the definitions take
    the home DAGSTER_HOME belongs to, and no ./.civicflow appears where the command ran."""
    home = prepare_home(Home(tmp_path / "home"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIVICFLOW_")} | {"DAGSTER_HOME": str(home.dagster)}
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "pipelines.definitions"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert not (elsewhere / ".civicflow").exists()  # the definitions prepared no other home


# The environment docs/operations.md gives the Dagster services so their own log lines carry no
# colour codes: Dagster's default formatter colours them whether or not the output is a terminal.
PLAIN_SERVICE_LOGS = {"DAGSTER_CLI_API_GRPC_LOG_FORMAT": "json"}  # the code servers they start


def _graphql(port: int, query: str) -> dict:
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        body = json.load(answer)
    assert "errors" not in body, body
    return body["data"]


@pytest.mark.slow
def test_the_webserver_with_only_dagster_home_shows_the_delivered_days_and_the_forecast_checks(tmp_path):
    """`dagster-webserver -m pipelines.definitions --log-format json` as a service runs it, with
    DAGSTER_HOME and no civicflow variable: the UI's partitions end at the last delivered day
    (not at the clock), the forecast and the plan show their blocking checks, and its log has
    no colour code."""
    import signal
    import time
    import urllib.request

    from support.governance_env import free_port

    from ingest.simulator import simulate
    from pipelines.forecast_assets import FORECAST_CHECKS, PLAN_CHECKS

    home = prepare_home(Home(tmp_path / "home"))
    simulate(home.landing, size="tiny", days=5, seed=3)  # delivery days 2026-01-01 … 2026-01-05
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIVICFLOW_")} | {"DAGSTER_HOME": str(home.dagster)} | PLAIN_SERVICE_LOGS
    port = free_port()
    log = tmp_path / "webserver.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-webserver")), "-m", "pipelines.definitions", "-h", "127.0.0.1", "-p", str(port),
             "--log-format", "json"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(600):  # until it answers (it loads the code location first), or it died
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5)
                break
            except OSError:
                time.sleep(0.5)
        data = _graphql(port, """{
          raw: assetNodeOrError(assetKey: {path: ["raw", "telemetry"]}) { ... on AssetNode { partitionKeys } }
          forecast: assetNodeOrError(assetKey: {path: ["forecasts", "demand_forecast"]}) {
            ... on AssetNode { partitionKeys assetChecksOrError { ... on AssetChecks { checks { name blocking description } } } } }
          plan: assetNodeOrError(assetKey: {path: ["forecasts", "staging_plan"]}) {
            ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks { name blocking description } } } } }
        }""")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    days = [f"2026-01-0{d}" for d in range(1, 6)]
    assert data["raw"]["partitionKeys"] == days and data["forecast"]["partitionKeys"] == days
    for asset, expected in (("forecast", FORECAST_CHECKS), ("plan", PLAN_CHECKS)):
        checks = data[asset]["assetChecksOrError"]["checks"]
        assert {c["name"]: c["description"] for c in checks} == expected and all(c["blocking"] for c in checks), checks
    text = log.read_text()
    assert "Serving dagster-webserver" in text and "dagster.code_server" in text, text[-3000:]
    assert "\x1b[" not in text, text[-3000:]
    assert not (tmp_path / ".civicflow").exists()
