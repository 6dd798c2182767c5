"""A deployment with several workers: Dagster's run storage on PostgreSQL, the daemon's run
queue, and every run launched in a process of its own (DefaultRunLauncher through the code
server), as a production instance would run them.

Two nightly runs are queued at once from the command line (`dagster job launch`); the daemon
dequeues both, each executes in its own process, and their warehouse-writing steps take turns
through the `warehouse` pool whose slots live in PostgreSQL. Skipped, with the reason, without
a PostgreSQL server (CIVICFLOW_TEST_PG_URL; `.ci/run` starts one).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import duckdb
import pytest
from support.pg_home import tiny_home_on_postgres

from pipelines.nightly import open_instance, partition_tags

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def deployment(pg_database, tmp_path_factory):
    """A home on a PostgreSQL instance with the Dagster daemon running; yield (home, env)."""
    with tiny_home_on_postgres(tmp_path_factory.mktemp("deploy"), pg_database, seed=5) as settings:
        home = settings.home
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DAGSTER_HOME": str(home.dagster)}
        log = (home.root / "daemon.log").open("w")
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-m", "pipelines.definitions", "-d", str(REPO)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the code server it starts goes with it
        )
        try:
            yield settings, env
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            try:  # the daemon's code server and anything else left in the group
                os.killpg(daemon.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            log.close()


def launch(settings, env: dict, first: date, last: date) -> str:
    """Queue one nightly run for a range of days, as an operator or a deployment script would."""
    out = subprocess.run(
        [str(BIN / "dagster"), "job", "launch", "-m", "pipelines.definitions", "-d", str(REPO), "-j", "nightly",
         "--tags", json.dumps(partition_tags(first, last))],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    with open_instance(settings) as instance:
        (run,) = instance.get_runs(limit=1)
        return run.run_id


def wait_for(settings, run_ids: list[str], timeout_s: float = 1500) -> dict:
    deadline = time.monotonic() + timeout_s
    with open_instance(settings) as instance:
        while time.monotonic() < deadline:
            runs = {rid: instance.get_run_by_id(rid) for rid in run_ids}
            if all(r.is_finished for r in runs.values()):
                return runs
            time.sleep(2)
    raise AssertionError(f"runs not finished after {timeout_s} s: { {k: v.status for k, v in runs.items()} }")


def test_two_runs_launched_in_separate_processes_share_the_writer_pool(deployment):
    import dagster as dg

    settings, env = deployment
    home = settings.home
    first = launch(settings, env, date(2026, 1, 1), date(2026, 1, 5))
    second = launch(settings, env, date(2026, 1, 5), date(2026, 1, 5))  # a re-run of the last day, queued behind it
    runs = wait_for(settings, [first, second])
    log = (home.root / "daemon.log").read_text()
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs.values()), (
        {k: v.status for k, v in runs.items()}, log[-3000:]
    )

    with open_instance(settings) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        pids, steps = {}, {}
        for rid in (first, second):
            for e in instance.all_logs(rid):
                if e.is_dagster_event and e.dagster_event.event_type in (dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS):
                    steps.setdefault((rid, e.dagster_event.step_key), []).append(e.timestamp)
                    pids.setdefault(rid, set()).add(e.dagster_event.pid)  # the process that ran the step
    # Each run executed in its own process, neither of them this test's.
    assert all(len(p) == 1 for p in pids.values()), pids  # one process per run, all its steps in it
    (a,), (b,) = pids.values()
    assert a != b and os.getpid() not in (a, b), pids
    # Every step writes the warehouse: no two steps of the two runs ever overlapped in time.
    spans = sorted((min(ts), max(ts), rid) for (rid, _), ts in steps.items())
    for (_a_start, a_end, a_run), (b_start, _b_end, b_run) in zip(spans, spans[1:]):
        assert b_start >= a_end, f"steps of {a_run} and {b_run} overlapped"
    assert {rid for _, _, rid in spans} == {first, second}

    # Both runs left one warehouse: every day loaded once, the re-run loaded nothing twice.
    con = duckdb.connect(str(home.warehouse), read_only=True)
    try:
        dupes = con.execute("SELECT count(*) - count(DISTINCT (device_id, seq)) FROM raw.telemetry").fetchone()[0]
        days = con.execute("SELECT count(DISTINCT demand_date) FROM marts.neighbourhood_demand_daily").fetchone()[0]
    finally:
        con.close()
    assert dupes == 0 and days >= 5
