"""Alerts on a real small home: a tiny city run through the real nightly Dagster job, its
published snapshot altered the way each fault would alter it, checked by the real CLI into a
local receiver of apprise's json:// POSTs; a real failing run whose hook alerts once; and a real
run whose blocking check fails."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from support.receiver import Receiver
from typer.testing import CliRunner

from ingest.simulator import simulate
from pipelines.nightly import open_instance, run_nightly
from pipelines.settings import Settings
from warehouse.snapshots import current_snapshot

pytestmark = pytest.mark.slow
DAYS = 28
LAST = "2026-01-28"  # the tiny city's last delivery day (a Wednesday)
ON_TIME = "2026-01-29T07:00"  # 08:00 in the city: day 01-28 was due at 06:00 and is there


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    """A home with 28 days of a tiny city, run once through the nightly job: its published snapshot."""
    settings = Settings.from_env(home=tmp_path_factory.mktemp("alerts") / "home")
    simulate(settings.home.landing, size="tiny", days=DAYS, seed=7)
    report = run_nightly(settings)
    assert report.success, report.failure
    return current_snapshot(settings.home.published)


def _home(tmp_path: Path, snapshot: Path, receiver: Receiver | None, alter: str = "") -> Path:
    """A fresh home publishing a copy of `snapshot` with `alter` (SQL) applied, alerting to `receiver`."""
    root = tmp_path / "home"
    published = root / "published"
    published.mkdir(parents=True)
    copy = published / snapshot.name
    shutil.copy(snapshot, copy)
    copy.chmod(0o644)
    if alter:
        con = duckdb.connect(str(copy))
        con.execute(alter)
        con.close()
    (published / "CURRENT").write_text(snapshot.name + "\n")
    if receiver is not None:
        (root / "alerts.toml").write_text(f'[notify]\nurls = ["{receiver.apprise_url}"]\n')
    return root


def _check(home: Path, *args: str):
    from pipelines.cli import app

    result = CliRunner().invoke(app, ["alerts", "check", "--home", str(home), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_normal_data_raises_no_alert(city, tmp_path):
    with Receiver() as receiver:
        home = _home(tmp_path, city, receiver)
        out = _check(home, "--now", ON_TIME)
    assert "0 conditions hold: 0 sent" in out and receiver.received == []


FAULTS = f"""
-- telemetry quarantined half its rows on the last day, and three of its files were refused
UPDATE raw._load_manifest SET rows_quarantined = rows_in_file // 2
 WHERE contract = 'telemetry' AND split_part(file_path, '/', 2) = '{LAST}';
INSERT INTO raw._load_manifest (file_path, file_name, file_sha256, contract, source, version, status, reason, started_at)
 SELECT 'telemetry/{LAST}/t' || i || '.jsonl', 't' || i || '.jsonl', 'sha' || i, 'telemetry', 'telemetry', 1, 'refused', 'truncated', now()
 FROM range(3) t(i);
-- pass_scans delivered a fifth of its usual rows; demand was counted ten times over
UPDATE raw._load_manifest SET rows_loaded = rows_loaded // 5 WHERE contract = 'pass_scans' AND split_part(file_path, '/', 2) = '{LAST}';
UPDATE marts.neighbourhood_demand_daily SET units = units * 10 WHERE demand_date = DATE '{LAST}';
-- the clearing operator's last two batches never cleared anything
UPDATE marts.settlement_reconciliation SET is_settled = false, age_hours = 30, breached_settlement_target = true
 WHERE item_type = 'transaction' AND txn_ts >= as_of_ts - INTERVAL 3 DAY AND txn_ts < as_of_ts - INTERVAL 30 HOUR;
"""


def _spend(home: Path, units: float) -> None:
    """Team finance spends `units` today (queries of at most its per-query cap), through the real ledger."""
    from governance import ledger
    from governance.rules import load_rules
    from governance.state import GovernanceState
    from pipelines.home import RULES_DIR

    finance = load_rules(RULES_DIR)["finance"]
    with GovernanceState(home / "governance.duckdb") as state:
        while units > 0:
            cost = min(units, finance.per_query_cap)
            ledger.settle(state, ledger.reserve(state, finance, "fin", cost), cost)
            units -= cost


def test_each_condition_alerts_once_with_its_text_and_command(city, tmp_path):
    with Receiver() as receiver:
        home = _home(tmp_path, city, receiver, FAULTS)
        _spend(home, 250.0)  # 83 % of finance's 300 a day
        late = (datetime.fromisoformat(ON_TIME) + timedelta(days=1)).isoformat()  # 01-29's files are due now
        dry = _check(home, "--dry-run", "--now", late)
        assert receiver.received == [] and "would be sent" in dry
        first = _check(home, "--now", late)
        sent = {m["title"]: m for m in receiver.received}
        again = _check(home, "--now", late)
    assert len(receiver.received) == len(sent), "a second check sends nothing new"
    assert "0 sent" in again and "already sent" in again
    by_text = {t: m["message"] for t, m in sent.items()}

    def one(title_part: str) -> str:
        (message,) = [m for t, m in by_text.items() if title_part in t]
        return message

    assert "Source telemetry has no file for 2026-01-29, due by 06:00 (Europe/Amsterdam)" in one("telemetry has delivered no file")
    assert one("telemetry has delivered no file").endswith("Look further: civicflow status")
    rejects = one("telemetry rejects well above its norm")
    # about half the day's rows were made bad above; the exact counts are the simulator's
    quarantined = re.search(r"(\d+) of (\d+) rows quarantined \((\d+\.\d)%, its 28-day norm 0\.0%\)", rejects)
    assert f"Source telemetry, delivery day {LAST}:" in rejects and quarantined and "3 files refused" in rejects, rejects
    assert 40 <= float(quarantined.group(3)) <= 60 and abs(int(quarantined.group(1)) - int(quarantined.group(2)) * float(quarantined.group(3)) / 100) <= 1
    assert rejects.endswith("Look further: civicflow ingest quarantine --contract telemetry")
    assert f"Source pass_scans, {LAST}:" in one("pass_scans volume fell") and "Wednesdays" in one("pass_scans volume fell")
    demand = one("neighbourhood_demand_daily volume rose")
    assert f"Mart marts.neighbourhood_demand_daily, {LAST}: " in demand and "outside" in demand and demand.endswith("Look further: civicflow runs")
    backlog = one("transactions unsettled past 24 h")
    assert "are not cleared 24 h after they were taken" in backlog and backlog.endswith("Look further: civicflow status")
    budget = one("team finance has used 80 % of its daily budget")
    assert f"spent 250.0 of its 300 cost units for {datetime.now(UTC).date()}" in budget and budget.endswith("civicflow budget --by day")
    assert sent["civicflow: team finance has used 80 % of its daily budget"]["type"] == "warning"
    assert f"{len(sent)} conditions hold: {len(sent)} sent" in first
    assert not any("volume" in t and ("telemetry" in t or "transactions" in t or "clearing" in t) for t in sent), "no volume alert on untouched sources"


def test_a_failed_run_alerts_once_from_the_hook_and_not_again_from_the_check(tmp_path, monkeypatch):
    """A real nightly run whose telemetry step cannot insert: the failure hook sends the alert
    through apprise and the webhook; the alerts job the sensor requests after the run, and
    `civicflow alerts check`, find it sent."""
    import dagster as dg

    from pipelines.definitions import build_definitions

    settings = Settings.from_env(home=tmp_path / "home")
    simulate(settings.home.landing, size="tiny", days=3, seed=3)
    con = duckdb.connect(str(settings.home.warehouse))
    con.execute("CREATE SCHEMA raw; CREATE VIEW raw.telemetry AS SELECT 1 AS squatter")
    con.close()
    with Receiver() as receiver, Receiver() as webhook:
        (settings.home.root / "alerts.toml").write_text(f'[notify]\nurls = ["{receiver.apprise_url}"]\n')
        monkeypatch.setenv("CIVICFLOW_NOTIFY_WEBHOOK", webhook.url)
        settings = Settings.from_env(home=settings.home.root)
        report = run_nightly(settings)
        assert not report.success
        # The run-failure sensor, evaluated on the real instance and run, requests the alerts job;
        # that job, run for real, finds the alert sent.
        defs = build_definitions(settings)
        sensor = next(s for s in defs.sensors if s.name == "alerts_after_failure")
        with open_instance(settings) as instance:
            run = instance.get_run_by_id(report.run_id)
            failure = next(e for e in instance.all_logs(run.run_id) if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_FAILURE")
            context = dg.build_run_status_sensor_context(sensor_name=sensor.name, dagster_instance=instance, dagster_run=run,
                                                         dagster_event=failure.dagster_event).for_run_failure()
            request = sensor(context)
            assert request.run_key == f"after-{report.run_id}"
            checked = defs.resolve_job_def("alerts").execute_in_process(instance=instance)
            assert checked.success
            logged = " ".join(e.user_message for e in instance.all_logs(checked.run_id))
        assert "alerts: 1 hold, 0 sent, 1 already sent, 0 not delivered" in logged
        out = _check(settings.home.root)
    (message,) = receiver.received
    assert message["title"].startswith("civicflow: the nightly run for ") and message["type"] == "failure"
    assert "failed in step ingest_telemetry (raw/telemetry)" in message["message"]
    assert message["message"].endswith(f"Look further: civicflow logs {report.run_id[:8]}")
    (payload,) = webhook.received
    assert payload["event"] == "civicflow.run_failed" and payload["step"] == "ingest_telemetry" and payload["run_id"] == report.run_id
    assert "already sent" in out and f"civicflow logs {report.run_id[:8]}" in out


def test_a_failed_blocking_check_of_a_real_run_alerts_once_with_the_run_to_look_at(tmp_path):
    """A real nightly run whose last day's transactions are valid row by row but all at the
    contract's maximum: the raw/transactions suite fails and blocks; `civicflow alerts check`
    sends the failed check (with the run to read) to the local receiver, once."""
    import polars as pl
    from support.landing_files import jsonl, put

    settings = Settings.from_env(home=tmp_path / "home")
    simulate(settings.home.landing, size="tiny", days=3, seed=3)
    devices = pl.concat([pl.read_csv(p) for p in (settings.home.landing / "reference" / "devices").glob("*.csv")])
    terminal = devices.filter(pl.col("device_type") == "payment_terminal")["device_id"][0]
    day = "2026-01-04"
    put(settings.home.landing, f"transactions/{day}/transactions_{day}.jsonl", jsonl([
        {"txn_id": f"TX-MAX-{i:03d}", "device_id": terminal, "pass_id": "P1", "amount_cents": 100_000, "currency": "EUR",
         "txn_time": f"{day}T{8 + i // 60:02d}:{i % 60:02d}:00+01:00"} for i in range(30)]))
    with Receiver() as receiver:
        (settings.home.root / "alerts.toml").write_text(f'[notify]\nurls = ["{receiver.apprise_url}"]\n')
        report = run_nightly(settings)
        assert not report.success
        first = _check(settings.home.root)
        again = _check(settings.home.root)
    checks = [m for m in receiver.received if m["title"] == "civicflow: blocking check great_expectations failed on raw/transactions"]
    assert len(checks) == 1, [m["title"] for m in receiver.received]
    message = checks[0]["message"]
    assert f"expect_column_values_to_be_between(mean_amount_cents): 1 of 4 days unexpected ({day}: 100,000)" in message, message  # the run covered 4 days
    assert message.endswith(f"Look further: civicflow logs {report.run_id[:8]}") and checks[0]["type"] == "failure"
    assert "sent" in first and "0 sent" in again and "already sent" in again
