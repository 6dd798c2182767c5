"""`civicflow status`: a readable health summary of a home, at once.

It reads the Dagster instance's own tables (runs, the assets' last materializations, check
results) with a plain SQL connection — SQLite files in the home, or the PostgreSQL instance —
and the *published* snapshot (quarantine, refusals, settlement backlog). It imports neither
dagster nor the definitions (which take seconds to load), and never opens the live warehouse,
so it is safe while a run writes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pipelines.cli.options import print_table
from pipelines.freshness import is_fresh
from pipelines.settings import Settings
from warehouse.snapshots import current_snapshot, open_snapshot

# The nightly job's assets promise freshness; the weekly calibration and the usage report don't.
NOT_NIGHTLY = {'["forecasts", "calibration"]', '["governance", "usage_report_daily"]'}


@dataclass
class AssetHealth:
    key: str
    group: str
    last_partition: str | None
    last_materialized: datetime | None
    fresh: bool


@dataclass
class Health:
    last_run: dict | None = None
    assets: list[AssetHealth] = field(default_factory=list)
    failed_checks: list[dict] = field(default_factory=list)
    snapshot: Path | None = None
    quarantine: dict[str, int] = field(default_factory=dict)
    refused_files: list[tuple[str, str]] = field(default_factory=list)
    last_delivery: dict[str, str] = field(default_factory=dict)
    settlement_backlog: dict = field(default_factory=dict)
    budgets: object | None = None

    @property
    def stale(self) -> list[AssetHealth]:
        return [a for a in self.assets if not a.fresh]


def _ts(value) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


@contextmanager
def instance_tables(settings: Settings) -> Iterator[tuple[object, object] | None]:
    """DB-API connections to the instance's run storage and its asset index (None: no instance)."""
    if settings.dagster_pg_url:
        import psycopg2  # dagster-postgres's driver

        con = psycopg2.connect(settings.dagster_pg_url.replace("postgresql+psycopg2://", "postgresql://"))
        try:
            yield con, con
        finally:
            con.close()
        return
    # Dagster's SQLite layout under the storage folder: runs in history/runs.db, each run's events
    # in history/runs/<run_id>.db and every asset event again in history/runs/index.db.
    history = settings.home.dagster_storage / "history"
    runs, index = history / "runs.db", history / "runs" / "index.db"
    if not runs.exists() or not index.exists():
        yield None
        return
    r = sqlite3.connect(f"file:{runs}?mode=ro", uri=True, timeout=5)
    i = sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=5)
    try:
        yield r, i
    finally:
        r.close()
        i.close()


def fetch_rows(con, sql: str) -> list[tuple]:
    cur = con.cursor()
    cur.execute(sql)
    return cur.fetchall()


RUN_TAG_KEYS = ("dagster/partition", "dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def recent_runs(settings: Settings, limit: int = 20, run_id_prefix: str | None = None) -> list[dict]:
    """The home's latest Dagster runs, newest first: id, job, status, start, end and the
    partitions they cover (read from the run storage, without loading Dagster)."""
    if run_id_prefix is not None and not all(c in "0123456789abcdef-" for c in run_id_prefix.lower()):
        return []  # a run id is hex: nothing else can match (and nothing else reaches the SQL)
    where = f"WHERE run_id LIKE '{run_id_prefix.lower()}%'" if run_id_prefix else ""
    with instance_tables(settings) as tables:
        if tables is None:
            return []
        runs_con = tables[0]
        rows = fetch_rows(runs_con, f"SELECT run_id, pipeline_name, status, start_time, end_time FROM runs {where} ORDER BY id DESC LIMIT {int(limit)}")
        if not rows:
            return []
        ids = ", ".join(f"'{r[0]}'" for r in rows)  # uuids read from the storage itself
        keys = ", ".join(f"'{k}'" for k in RUN_TAG_KEYS)
        tags: dict[str, dict[str, str]] = {}
        for run_id, key, value in fetch_rows(runs_con, f"SELECT run_id, key, value FROM run_tags WHERE run_id IN ({ids}) AND key IN ({keys})"):
            tags.setdefault(run_id, {})[key] = value
    found = []
    for run_id, job, status, start, end in rows:
        t = tags.get(run_id, {})
        partitions = t.get("dagster/partition") or (
            f"{t['dagster/asset_partition_range_start']}..{t['dagster/asset_partition_range_end']}"
            if "dagster/asset_partition_range_start" in t else "-"
        )
        found.append({"run_id": run_id, "job": job, "status": status, "started": _ts(start), "ended": _ts(end), "partitions": partitions})
    return found


def gather(settings: Settings, now: datetime | None = None) -> Health:
    now = now or datetime.now(UTC)
    health = Health()
    with instance_tables(settings) as tables:
        if tables is not None:
            _from_instance(health, *tables, now=now, deadline=settings.schedule.fresh_by)
    health.snapshot = current_snapshot(settings.home.published)
    if health.snapshot and health.snapshot.exists():
        _from_snapshot(health, health.snapshot, settings)
    return health


def _from_instance(health: Health, runs, index, now: datetime, deadline: str) -> None:
    last = fetch_rows(runs, "SELECT run_id, status, start_time, end_time FROM runs WHERE pipeline_name = 'nightly' ORDER BY id DESC LIMIT 1")
    if last:
        run_id, status, start, end = last[0]
        tags = dict(fetch_rows(runs, f"SELECT key, value FROM run_tags WHERE run_id = '{run_id}'"))
        health.last_run = {
            "run_id": run_id,
            "status": status,
            "days": tags.get("dagster/partition")
            or f"{tags.get('dagster/asset_partition_range_start')}..{tags.get('dagster/asset_partition_range_end')}",
            "started": _ts(start),
            "ended": _ts(end),
        }
    latest = fetch_rows(
        index,
        "SELECT asset_key, max(timestamp), max(partition) FROM event_logs "
        "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' GROUP BY asset_key",
    )
    for key_json, when, partition in sorted(latest):
        if key_json in NOT_NIGHTLY:
            continue
        path = json.loads(key_json)
        ts = _ts(when)
        health.assets.append(AssetHealth("/".join(path), _group(path), partition, ts, is_fresh(ts, now, deadline)))
    checks = fetch_rows(
        index,
        "SELECT asset_key, check_name, execution_status, evaluation_event FROM asset_check_executions e "
        "WHERE id = (SELECT max(id) FROM asset_check_executions l WHERE l.asset_key = e.asset_key AND l.check_name = e.check_name)",
    )
    for key_json, check, status, event in checks:
        description = _check_description(event)
        if status == "FAILED" or description is not None:
            health.failed_checks.append({"asset": "/".join(json.loads(key_json)), "check": check, "description": description or status})


def _group(path: list[str]) -> str:
    return {"raw": "ingest", "staging": "warehouse", "intermediate": "warehouse", "marts": "warehouse", "published": "governance"}.get(path[0], path[0])


def _check_description(event: str | None) -> str | None:
    """The description of a failed evaluation (None when it passed or carries none)."""
    if not event:
        return None
    try:
        evaluation = json.loads(event)["dagster_event"]["event_specific_data"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(evaluation, dict) or evaluation.get("passed", True):
        return None
    return evaluation.get("description") or "failed"


def _from_snapshot(health: Health, snapshot: Path, settings: Settings) -> None:
    with open_snapshot(snapshot, settings.warehouse.reader_credentials()) as snap:  # a DuckDB file, or the lake's version
        con = snap.con
        try:
            health.quarantine = dict(con.execute("SELECT contract, count(*) FROM raw._quarantine GROUP BY 1 ORDER BY 1").fetchall())
            health.refused_files = con.execute(
                """
                SELECT file_path, reason FROM raw._load_manifest
                QUALIFY row_number() OVER (PARTITION BY file_path ORDER BY started_at DESC) = 1 AND status = 'refused'
                ORDER BY file_path
                """
            ).fetchall()
            health.last_delivery = dict(
                con.execute(
                    """
                    SELECT contract, max(try_cast(split_part(file_path, '/', 2) AS DATE))::VARCHAR
                    FROM raw._load_manifest WHERE status = 'loaded' AND source <> 'reference' GROUP BY 1 ORDER BY 1
                    """
                ).fetchall()
            )
            row = con.execute(
                """
                SELECT count(*), coalesce(sum(txn_amount_cents), 0), max(age_hours), max(as_of_ts)
                FROM marts.settlement_reconciliation
                WHERE item_type = 'transaction' AND NOT coalesce(is_settled, false) AND breached_settlement_target
                """
            ).fetchone()
            health.settlement_backlog = {"transactions": row[0], "amount_cents": int(row[1]), "oldest_hours": row[2], "as_of": row[3]}
        except duckdb.CatalogException:
            pass  # a snapshot from before a table existed: show what there is


def print_health(console: Console, health: Health, settings: Settings) -> None:
    run = health.last_run
    if run:
        colour = "green" if run["status"] == "SUCCESS" else "red"
        took = f"{(run['ended'] - run['started']).total_seconds():.0f} s" if run["ended"] and run["started"] else "running"
        started = f"{run['started']:%Y-%m-%d %H:%M} UTC" if run["started"] else "not started"
        console.print(f"Last nightly run: [{colour}]{run['status']}[/{colour}] for {escape(str(run['days']))} — started {started}, {took} ({run['run_id']})")
    else:
        console.print("Last nightly run: [yellow]none yet[/yellow] (civicflow run)")
    groups: dict[str, list[AssetHealth]] = {}
    for a in health.assets:
        groups.setdefault(a.group, []).append(a)
    table = Table(title="Freshness (rebuilt before the nightly deadline?)", title_justify="left")
    for col in ("group", "assets", "fresh", "stale", "last day built", "last built (UTC)"):
        table.add_column(col)
    for group, assets in sorted(groups.items()):
        stale = [a for a in assets if not a.fresh]
        last = max((a.last_materialized for a in assets if a.last_materialized), default=None)
        day = max((a.last_partition for a in assets if a.last_partition), default="-")
        table.add_row(group, str(len(assets)), str(len(assets) - len(stale)), f"[red]{len(stale)}[/red]" if stale else "0", day, f"{last:%Y-%m-%d %H:%M}" if last else "never")
    print_table(console, table)
    if health.stale:
        console.print("[red]stale:[/red] " + ", ".join(a.key for a in health.stale[:12]) + (" …" if len(health.stale) > 12 else ""))
    if health.failed_checks:
        console.print(f"[red]failed checks ({len(health.failed_checks)}):[/red]")
        for c in health.failed_checks[:20]:
            console.print(Text(f"  {c['asset']} · {c['check']}: {c['description']}"))  # data: never read as markup
    else:
        console.print("Failed checks: [green]none[/green]")
    _print_budgets(console, settings)
    if health.snapshot is None:
        console.print("Published snapshot: [yellow]none yet[/yellow]")
        return
    console.print(Text(f"Published snapshot: {health.snapshot.name}"))
    q = ", ".join(f"{k} {v:,}" for k, v in health.quarantine.items()) or "none"
    console.print(f"Quarantined rows: {escape(q)}")
    console.print(f"Refused files still in the landing zone: {len(health.refused_files)}")
    for path, reason in health.refused_files[:10]:
        console.print(Text(f"  {path}: {reason.removeprefix(Path(path).name + ': ')}"))  # data: never read as markup
    if health.last_delivery:
        console.print("Last delivery day per source: " + escape(", ".join(f"{k} {v}" for k, v in health.last_delivery.items())))
    b = health.settlement_backlog
    if b:
        console.print(
            f"Settlement backlog past 24 h: {b['transactions']} transactions, EUR {b['amount_cents'] / 100:,.2f}"
            + (f", oldest {b['oldest_hours']:.0f} h (as of {b['as_of']:%Y-%m-%d %H:%M})" if b["transactions"] else "")
        )


def _print_budgets(console: Console, settings: Settings) -> None:
    from governance.state import StateBusy
    from pipelines.cli.governance import budget_table
    from pipelines.home import RULES_DIR

    try:
        print_table(console, budget_table(settings.home, RULES_DIR))
    except StateBusy:
        console.print("Budgets: the gateway holds governance.duckdb; ask it: GET /v1/usage")
    except SystemExit:  # a rules problem was already printed
        pass
