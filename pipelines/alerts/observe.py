"""The facts the alert conditions need, read from a home: the Dagster instance's tables (failed
runs, failed blocking checks), the published snapshot (the ingest manifest, the marts) and the
governance ledger (spend). Like `civicflow status`, it never opens the live warehouse.

A part that cannot be read (no snapshot yet, the ledger held by another process) is left out
and named in `notes`; its kinds are not in `evaluated`, so their open alerts are kept, not cleared.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import date

import duckdb

from pipelines.alerts.conditions import FailedCheck, FailedRun, SettlementBacklog, TeamSpend
from pipelines.alerts.config import AlertsConfig
from pipelines.alerts.norms import RejectDay, VolumeDay
from pipelines.settings import Settings
from pipelines.status import fetch_rows, instance_tables, recent_runs
from warehouse.snapshots import current_snapshot, open_snapshot


@dataclass
class Observations:
    failed_runs: list[FailedRun] = field(default_factory=list)
    failed_checks: list[FailedCheck] = field(default_factory=list)
    last_run_id: str | None = None  # the latest nightly run, for "look further" commands
    last_delivery: dict[str, date | None] = field(default_factory=dict)
    reject_days: list[RejectDay] = field(default_factory=list)
    volumes: list[VolumeDay] = field(default_factory=list)
    event_days: dict[date, str] = field(default_factory=dict)  # days of a large city event → its name
    backlog: SettlementBacklog | None = None
    spends: list[TeamSpend] = field(default_factory=list)
    evaluated: set[str] = field(default_factory=set)  # alert kinds whose facts were read
    notes: list[str] = field(default_factory=list)


def observe(settings: Settings, config: AlertsConfig) -> Observations:
    obs = Observations()
    _from_instance(obs, settings)
    _from_snapshot(obs, settings, config)
    _from_ledger(obs, settings)
    return obs


def _from_instance(obs: Observations, settings: Settings) -> None:
    runs = recent_runs(settings, limit=50)
    latest: dict[str, dict] = {}
    for r in runs:  # newest first: the first run of each job is its latest
        latest.setdefault(r["job"], r)
    obs.last_run_id = latest["nightly"]["run_id"] if "nightly" in latest else None
    for job, r in sorted(latest.items()):
        if r["status"] == "FAILURE":
            step, error = _first_failure(settings, r["run_id"])
            obs.failed_runs.append(FailedRun(r["run_id"], job, "" if r["partitions"] == "-" else r["partitions"], step, error=error))
    with instance_tables(settings) as tables:
        if tables is None:
            obs.evaluated |= {"run_failed", "check_failed"}
            return
        checks = fetch_rows(
            tables[1],
            "SELECT asset_key, check_name, run_id, evaluation_event FROM asset_check_executions e "
            "WHERE execution_status = 'FAILED' AND id = (SELECT max(id) FROM asset_check_executions l "
            "WHERE l.asset_key = e.asset_key AND l.check_name = e.check_name AND l.execution_status <> 'PLANNED')",
        )
    for key_json, check, run_id, event in checks:
        evaluation = _event_data(event)
        if not evaluation.get("blocking", True):
            continue
        asset = "/".join(json.loads(key_json))
        obs.failed_checks.append(FailedCheck(asset, check, evaluation.get("description") or "failed", run_id or ""))
    obs.evaluated |= {"run_failed", "check_failed"}


def _event_data(event: str | None) -> dict:
    try:
        data = json.loads(event)["dagster_event"]["event_specific_data"]
    except (TypeError, ValueError, KeyError):
        return {}
    return data if isinstance(data, dict) else {}


def _first_failure(settings: Settings, run_id: str) -> tuple[str, str]:
    """The first failed step of a run and its error's message ("" when none is on record)."""
    sql = f"SELECT step_key, event FROM event_logs WHERE dagster_event_type = 'STEP_FAILURE' AND run_id = '{run_id}' ORDER BY id LIMIT 1"
    with instance_tables(settings) as tables:
        if tables is None:
            return "", ""
        if settings.dagster_pg_url:
            found = fetch_rows(tables[0], sql)
        else:  # SQLite keeps each run's events in its own file
            path = settings.home.dagster_storage / "history" / "runs" / f"{run_id}.db"
            if not path.exists():
                return "", ""
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                found = fetch_rows(con, sql)
            finally:
                con.close()
    if not found:
        return "", ""
    step, event = found[0]
    error = _event_data(event).get("error") or {}
    message = (error.get("message") or "").strip().splitlines()
    return step or "", message[0] if message else ""


MANIFEST_DAYS = """
WITH latest AS (
    SELECT * FROM raw._load_manifest WHERE source <> 'reference'
    QUALIFY row_number() OVER (PARTITION BY file_path ORDER BY started_at DESC) = 1
)
SELECT contract, try_cast(split_part(file_path, '/', 2) AS DATE) AS day,
       count(*) FILTER (WHERE status = 'loaded') AS loaded_files,
       coalesce(sum(rows_in_file), 0), coalesce(sum(rows_quarantined), 0), count(*) FILTER (WHERE status = 'refused'),
       coalesce(sum(rows_loaded), 0)
FROM latest GROUP BY 1, 2 HAVING day IS NOT NULL ORDER BY 1, 2
"""


def _from_snapshot(obs: Observations, settings: Settings, config: AlertsConfig) -> None:
    snapshot = current_snapshot(settings.home.published)
    if snapshot is None or not snapshot.exists():
        obs.notes.append("no published snapshot yet: sources, volume and settlement not checked")
        return
    with open_snapshot(snapshot, settings.warehouse.reader_credentials()) as snap:
        con = snap.con
        try:
            days = con.execute(MANIFEST_DAYS).fetchall()
        except duckdb.CatalogException:
            days = []
        for contract, day, loaded_files, rows, quarantined, refused, loaded in days:
            if loaded_files:
                previous = obs.last_delivery.get(contract)
                obs.last_delivery[contract] = day if previous is None else max(previous, day)
                obs.volumes.append(VolumeDay(contract, "source", day, float(loaded)))
            obs.reject_days.append(RejectDay(contract, day, int(rows), int(quarantined), int(refused)))
        obs.evaluated |= {"source_late", "rejects", "volume"}
        obs.event_days = _event_days(con, config.event_attendance)
        for mart in config.marts:
            obs.volumes += _mart_volume(con, mart, config.window_days, obs.notes)
        obs.backlog = _settlement_backlog(con, config, obs.notes)
        if obs.backlog is not None:
            obs.evaluated.add("settlement_backlog")


def _mart_volume(con: duckdb.DuckDBPyConnection, mart, window_days: int, notes: list[str]) -> list[VolumeDay]:
    sql = (f"SELECT CAST({mart.date_column} AS DATE) AS day, CAST({mart.measure} AS DOUBLE) FROM {mart.table} "
           f"WHERE {mart.date_column} >= (SELECT max({mart.date_column}) FROM {mart.table}) - INTERVAL {int(window_days)} DAY GROUP BY 1")
    try:
        rows = con.execute(sql).fetchall()
    except duckdb.Error as exc:
        notes.append(f"volume of {mart.table} not read: {str(exc).splitlines()[0]}")
        return []
    return [VolumeDay(mart.table, "mart", day, value or 0.0) for day, value in rows]


def _event_days(con: duckdb.DuckDBPyConnection, attendance: int) -> dict[date, str]:
    try:
        rows = con.execute(
            "SELECT CAST(d AS DATE), string_agg(DISTINCT name, ', ') FROM raw.events, "
            "range(CAST(start_time AS DATE), CAST(end_time AS DATE) + INTERVAL 1 DAY, INTERVAL 1 DAY) t(d) "
            "WHERE expected_attendance >= ? GROUP BY 1",
            [attendance],
        ).fetchall()
    except duckdb.CatalogException:
        return {}
    return dict(rows)


def _settlement_backlog(con: duckdb.DuckDBPyConnection, config: AlertsConfig, notes: list[str]) -> SettlementBacklog | None:
    try:
        row = con.execute(
            """
            SELECT count(*), coalesce(sum(txn_amount_cents), 0), max(age_hours), max(as_of_ts)
            FROM marts.settlement_reconciliation
            WHERE item_type = 'transaction' AND NOT coalesce(is_settled, false) AND age_hours > ?
              AND txn_ts >= as_of_ts - to_days(CAST(? AS INTEGER))
            """,
            [config.settlement_max_age_hours, config.settlement_lookback_days],
        ).fetchone()
    except duckdb.CatalogException:
        notes.append("no marts.settlement_reconciliation in the snapshot: settlement not checked")
        return None
    return SettlementBacklog(int(row[0]), int(row[1]), row[2], row[3])


def _from_ledger(obs: Observations, settings: Settings) -> None:
    from governance.admin import AdminError
    from governance.admin_ops import run
    from governance.rules import RuleFileError, load_rules
    from governance.state import StateBusy
    from pipelines.home import RULES_DIR

    if not settings.home.governance_db.exists():
        obs.evaluated.add("budget")  # no ledger: nobody spent anything
        return
    try:
        answer = run(settings.home.governance_db, "budget", {}, lambda: load_rules(RULES_DIR))
    except (AdminError, StateBusy, RuleFileError) as exc:
        obs.notes.append(f"budgets not checked: {exc}")
        return
    day = date.fromisoformat(answer["day"])
    obs.spends = [TeamSpend(t["team"], day, t["day_spent"], t["day_budget"], t["month_spent"], t["month_budget"]) for t in answer["teams"]]
    obs.evaluated.add("budget")
