"""Alert conditions on plain data, the alerts file, de-duplication and delivery to a real local
receiver (apprise's json:// and the settings' webhook and command)."""

from __future__ import annotations

import json
import logging
import random
import re
import tomllib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from support.receiver import Receiver, closed_port

from pipelines.alerts.conditions import (
    FailedCheck,
    FailedRun,
    SettlementBacklog,
    TeamSpend,
    budget_alerts,
    failed_check,
    freshness_alerts,
    run_failed,
    settlement_alerts,
)
from pipelines.alerts.config import AlertsConfig, AlertsFileError, load_alerts, parse_alerts
from pipelines.alerts.dedupe import plan_delivery
from pipelines.alerts.norms import RejectDay, VolumeDay, reject_alerts, volume_alerts
from pipelines.alerts.notifier import Notifier, deliver

DOCS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
LAST = date(2026, 2, 4)  # a Wednesday
CONFIG = AlertsConfig()


def _days(n: int = 35) -> list[date]:
    return [LAST - timedelta(days=i) for i in reversed(range(n))]


def _telemetry(last_quarantined: int = 1, last_refused: int = 0, last_rows: int | None = None) -> list[RejectDay]:
    """A month of telemetry as the tiny city delivers it: ~250 rows a day, 0-2 quarantined, a refused file now and then."""
    rng = random.Random(4)
    out = [RejectDay("telemetry", d, 230 + rng.randint(-40, 40), rng.choice([0, 0, 1, 1, 2]), 1 if d.day in (10, 22) else 0) for d in _days()[:-1]]
    return [*out, RejectDay("telemetry", LAST, last_rows or 240, last_quarantined, last_refused)]


def _weekly(last_value: float | None = None, name: str = "marts.neighbourhood_demand_daily") -> list[VolumeDay]:
    """Volume with a weekend lift and ±4 % noise; the last day's value replaced when given."""
    rng = random.Random(9)
    out = [VolumeDay(name, "mart", d, (1300 if d.weekday() >= 5 else 1000) * (1 + rng.uniform(-0.04, 0.04))) for d in _days()]
    if last_value is not None:
        out[-1] = VolumeDay(name, "mart", LAST, last_value)
    return out


def test_the_alerts_file_in_the_docs_is_the_config_it_says():
    block = re.search(r"```toml\n(.*?)```", DOCS.read_text(), re.S).group(1)
    config = parse_alerts(tomllib.loads(block), "docs")
    assert config.deadline("telemetry") == "04:30" and config.deadline("pass_scans") == config.default_deadline
    assert config.budget_levels == (50, 80, 100) and config.urls


def test_a_malformed_alerts_file_is_refused_with_the_key(tmp_path):
    path = tmp_path / "alerts.toml"
    path.write_text('[freshness.deadlines]\ntelemetry = "25:00"\n')
    with pytest.raises(AlertsFileError, match=r"freshness.deadlines.telemetry: '25:00' is not a time"):
        load_alerts(path)
    path.write_text("[volume]\nkk = 3\n")
    with pytest.raises(AlertsFileError, match=r"unknown key volume.kk"):
        load_alerts(path)
    assert load_alerts(tmp_path / "absent.toml") == AlertsConfig()


def test_a_source_without_a_file_by_its_deadline_alerts_and_one_on_time_does_not():
    config = parse_alerts({"freshness": {"deadlines": {"telemetry": "04:30"}}})
    last = {"telemetry": LAST, "pass_scans": LAST}
    # 2026-02-05 04:00 Amsterdam: day 02-04 is due by 06:00 (pass_scans) or 04:30 (telemetry): not yet due.
    assert freshness_alerts(last, datetime(2026, 2, 5, 3, 0, tzinfo=UTC), config) == []
    # 05:00 local: telemetry's deadline passed, pass_scans' not; both delivered 02-04 anyway.
    assert freshness_alerts(last, datetime(2026, 2, 5, 4, 0, tzinfo=UTC), config) == []
    # 02-06 05:00 local: 02-05 is due for telemetry (04:30), not yet for pass_scans (06:00).
    (late,) = freshness_alerts(last, datetime(2026, 2, 6, 4, 0, tzinfo=UTC), config)
    assert late.key == "source_late:telemetry" and late.command == "civicflow status"
    assert "no file for 2026-02-05, due by 04:30 (Europe/Amsterdam)" in late.body and "last delivered day is 2026-02-04" in late.body


def test_budget_alerts_at_50_80_and_100_percent_of_day_and_month():
    def spend(day_spent, month_spent):
        return [TeamSpend("finance", LAST, day_spent, 300.0, month_spent, 5000.0)]

    assert budget_alerts(spend(149.0, 1000.0), CONFIG) == []
    (day,) = budget_alerts(spend(150.0, 1000.0), CONFIG)
    assert (day.key, day.level, day.severity) == ("budget:finance:day:2026-02-04", "50%", "info")
    assert day.command == "civicflow budget --by day" and "spent 150.0 of its 300 cost units for 2026-02-04 (50 %)" in day.body
    day, month = budget_alerts(spend(300.0, 4100.0), CONFIG)
    assert (day.level, day.severity) == ("100%", "failure") and "refused until the budget resets" in day.body
    assert (month.key, month.level, month.severity, month.command) == ("budget:finance:month:2026-02", "80%", "warning", "civicflow budget")


def test_a_reject_spike_alerts_and_the_usual_rejects_do_not():
    assert reject_alerts(_telemetry(), CONFIG) == []
    assert reject_alerts(_telemetry(last_refused=1), CONFIG) == []  # one refused file: it happens
    (spike,) = reject_alerts(_telemetry(last_quarantined=30), CONFIG)
    assert spike.key == "rejects:telemetry:2026-02-04" and spike.command == "civicflow ingest quarantine --contract telemetry"
    assert "30 of 240 rows quarantined (12.5%, its 28-day norm 0.4%)" in spike.body
    (refused,) = reject_alerts(_telemetry(last_refused=3), CONFIG)
    assert "3 files refused (its 28-day norm 0 a day)" in refused.body


def test_a_volume_outside_its_own_history_alerts_and_a_usual_one_does_not():
    assert volume_alerts(_weekly(), CONFIG, "civicflow runs") == []
    assert volume_alerts(_weekly(940.0), CONFIG, "civicflow runs") == []  # a quiet Wednesday, within the range
    (drop,) = volume_alerts(_weekly(300.0), CONFIG, "civicflow logs 1234abcd")
    assert (drop.key, drop.level, drop.command) == ("volume:mart:marts.neighbourhood_demand_daily:2026-02-04", "low", "civicflow logs 1234abcd")
    assert "Mart marts.neighbourhood_demand_daily, 2026-02-04: 300, outside" in drop.body and "of the last 4 Wednesdays" in drop.body
    # A Wednesday at a Saturday's volume is outside the Wednesdays' range, though usual for a Saturday.
    (high,) = volume_alerts(_weekly(1300.0), CONFIG, "civicflow runs")
    assert high.level == "high"


def test_a_failed_blocking_check_names_the_check_the_asset_and_the_run():
    alert = failed_check(FailedCheck("raw/telemetry", "great_expectations", "2 of 9 expectations failed: reading_value in range", "9f8e7d6c-0000"))
    assert (alert.key, alert.severity, alert.command) == ("check_failed:raw/telemetry:great_expectations", "failure", "civicflow logs 9f8e7d6c")
    assert alert.body == "The blocking check great_expectations on raw/telemetry failed: 2 of 9 expectations failed: reading_value in range"


def test_a_high_volume_on_a_large_event_day_is_no_alert_but_a_low_one_is():
    events = {LAST: "Canal Lights Zuiddam"}
    assert volume_alerts(_weekly(3000.0), CONFIG, "civicflow runs", events) == []
    (low,) = volume_alerts(_weekly(300.0), CONFIG, "civicflow runs", events)
    assert low.level == "low"


def test_a_few_bad_rows_of_a_small_source_are_no_spike():
    small = [RejectDay("pass_scans", d, 60, 0, 0) for d in _days()[:-1]] + [RejectDay("pass_scans", LAST, 50, 2, 0)]
    assert reject_alerts(small, CONFIG) == []  # 4 %, but 2 rows: below min_rows


def test_settlement_backlog_alerts_past_its_threshold_only():
    as_of = datetime(2026, 2, 4, 5, 0)
    assert settlement_alerts(SettlementBacklog(1, 450, 40.0, as_of), CONFIG) == []  # one straggler: a normal day
    (backlog,) = settlement_alerts(SettlementBacklog(28, 12_345, 49.5, as_of), CONFIG)
    assert backlog.key == "settlement_backlog" and backlog.command == "civicflow status"
    assert "28 transactions (EUR 123.45) are not cleared 24 h after they were taken, the oldest 50 h" in backlog.body



def test_dedupe_sends_once_until_the_condition_clears_or_changes_level(tmp_path):
    state = tmp_path / "alerts-state.json"
    with Receiver() as receiver:
        notifier = Notifier(urls=(receiver.apprise_url,))
        day50 = budget_alerts([TeamSpend("finance", LAST, 160.0, 300.0, 0.0, 5000.0)], CONFIG)
        day80 = budget_alerts([TeamSpend("finance", LAST, 250.0, 300.0, 0.0, 5000.0)], CONFIG)
        assert [a.key for a in deliver(day50, notifier, state, {"budget"}).sent] == ["budget:finance:day:2026-02-04"]
        assert deliver(day50, notifier, state, {"budget"}).sent == []  # same level: not again
        assert [a.level for a in deliver(day80, notifier, state, {"budget"}).sent] == ["80%"]  # a new level
        assert deliver([], notifier, state, set()).plan.cleared == []  # budgets not read this time: kept
        assert deliver([], notifier, state, {"budget"}).plan.cleared == ["budget:finance:day:2026-02-04"]
        assert [a.level for a in deliver(day80, notifier, state, {"budget"}).sent] == ["80%"]  # back after it cleared
    assert [m["title"] for m in receiver.received] == [
        "civicflow: team finance has used 50 % of its daily budget",
        "civicflow: team finance has used 80 % of its daily budget",
        "civicflow: team finance has used 80 % of its daily budget",
    ]
    assert receiver.received[0]["type"] == "info" and receiver.received[1]["type"] == "warning"
    assert receiver.received[0]["message"].endswith("\nLook further: civicflow budget --by day")


def test_a_dry_run_sends_and_records_nothing(tmp_path):
    state = tmp_path / "alerts-state.json"
    with Receiver() as receiver:
        alerts = settlement_alerts(SettlementBacklog(28, 100, 49.0, None), CONFIG)
        assert deliver(alerts, Notifier(urls=(receiver.apprise_url,)), state, {"settlement_backlog"}, dry_run=True).plan.send == alerts
    assert receiver.received == [] and list(tmp_path.iterdir()) == []


def test_every_target_receives_the_alert_and_the_json_carries_the_command(tmp_path):
    sink = tmp_path / "command.json"
    failed = run_failed(FailedRun("0123abcd-0000-4000-8000-000000000000", "nightly", "2026-02-04", "ingest_telemetry", ("raw/telemetry",), "OSError: disk full"))
    with Receiver() as apprise_rx, Receiver() as webhook_rx:
        notifier = Notifier(urls=(apprise_rx.apprise_url,), webhook=webhook_rx.url, command=f"tee {sink}")
        assert deliver([failed], notifier, tmp_path / "state.json").sent == [failed]
    (message,) = apprise_rx.received
    assert apprise_rx.paths == ["/alerts"] and message["type"] == "failure"
    assert message["title"] == "civicflow: the nightly run for 2026-02-04 failed"
    assert "failed in step ingest_telemetry (raw/telemetry): OSError: disk full" in message["message"]
    assert message["message"].endswith("Look further: civicflow logs 0123abcd")
    (payload,) = webhook_rx.received
    assert payload["event"] == "civicflow.run_failed" and payload["step"] == "ingest_telemetry" and payload["command"] == "civicflow logs 0123abcd"
    assert json.loads(sink.read_text()) == payload


def test_a_failed_delivery_is_logged_not_raised_and_tried_again(tmp_path, caplog):
    state = tmp_path / "state.json"
    alerts = settlement_alerts(SettlementBacklog(28, 100, 49.0, None), CONFIG)
    dead = Notifier(urls=(f"json://127.0.0.1:{closed_port()}/alerts",), webhook=f"http://127.0.0.1:{closed_port()}/hook", command="false")
    with caplog.at_level(logging.WARNING, logger="civicflow.alerts"):
        result = deliver(alerts, dead, state)
    assert result.failed == alerts and result.sent == []
    logged = caplog.text
    assert "not delivered to every apprise URL (json://127.0.0.1:" in logged and "attempt 3/3" in logged and "command 'false' failed" in logged
    with Receiver() as receiver:  # the receiver is back: the alert nobody got is sent now
        assert deliver(alerts, Notifier(urls=(receiver.apprise_url,)), state).sent == alerts
    assert len(receiver.received) == 1


def test_plan_delivery_keeps_the_open_alerts_of_kinds_not_read():
    from pipelines.alerts.dedupe import SentAlert

    state = {"budget:finance:day:2026-02-04": SentAlert("50%", "2026-02-04T10:00:00+00:00"), "source_late:telemetry": SentAlert("late", "x")}
    plan = plan_delivery([], state, {"source_late"})
    assert plan.cleared == ["source_late:telemetry"]
