"""Operations: a failing run notifies (webhook and command) and never publishes."""

from __future__ import annotations

import json

import duckdb
import pytest
from support.receiver import Receiver

from ingest.simulator import simulate
from pipelines.nightly import open_instance, run_nightly
from pipelines.settings import Settings

pytestmark = pytest.mark.slow


def test_failed_run_notifies_hook_and_command_and_never_publishes(home_dir, tmp_path, monkeypatch):
    home = Settings.from_env().home
    simulate(home.landing, size="tiny", days=5, seed=3)
    # A foreign object where ingest expects its table: the telemetry step cannot insert.
    con = duckdb.connect(str(home.warehouse))
    con.execute("CREATE SCHEMA raw; CREATE VIEW raw.telemetry AS SELECT 1 AS squatter")
    con.close()
    sink = tmp_path / "notified.json"
    monkeypatch.setenv("CIVICFLOW_NOTIFY_COMMAND", f"tee {sink}")
    with Receiver() as receiver:
        monkeypatch.setenv("CIVICFLOW_NOTIFY_WEBHOOK", receiver.url)
        report = run_nightly(Settings.from_env())
    assert not report.success
    assert "ingest_telemetry" in report.failure
    (payload,) = receiver.received
    assert payload["step"] == "ingest_telemetry"
    assert payload["assets"] == ["raw/telemetry"]
    assert "telemetry" in payload["error"] and payload["partition"]
    assert json.loads(sink.read_text()) == payload
    assert not (home.published / "CURRENT").exists()
    assert not list(home.published.glob("warehouse-*.duckdb"))


def test_a_locked_warehouse_is_retried_with_backoff_and_the_run_succeeds(home_dir):
    """A foreign process holds the warehouse past the bounded wait of an attempt: the step asks
    Dagster for a retry (with backoff) instead of failing; once the lock is released (here: as
    soon as the retry is on record) the retried step opens it and the run succeeds."""
    import subprocess
    import sys
    import threading
    import time


    settings = Settings.from_env()
    home = settings.home
    simulate(home.landing, size="tiny", days=3, seed=5)
    with open_instance(settings):  # the instance's storage exists before two threads open it
        pass
    duckdb.connect(str(home.warehouse)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(home.warehouse)!r}); print('held', flush=True); time.sleep(300)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    started = time.time()
    retried = threading.Event()

    def release_after_retry():
        deadline = time.monotonic() + 240
        with open_instance(settings) as instance:
            while time.monotonic() < deadline and not retried.is_set():
                for run in instance.get_runs(limit=1):
                    if any("transient failure opening the warehouse" in (e.user_message or "") for e in instance.all_logs(run.run_id)):
                        retried.set()
                time.sleep(0.5)
        holder.kill()

    watcher = threading.Thread(target=release_after_retry)
    watcher.start()
    try:
        report = run_nightly(settings)
    finally:
        holder.kill()
        watcher.join(timeout=300)
    assert retried.is_set()
    assert report.success, report.failure
    with open_instance(settings) as instance:
        events = instance.all_logs(report.run_id)
    assert any(e.dagster_event and e.dagster_event.event_type_value == "STEP_UP_FOR_RETRY" for e in events)
    assert time.time() - started > 15  # the first attempt waited its bounded time before asking
