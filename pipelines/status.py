"""`civicflow status`: a readable health summary of a home.

It reads the Dagster instance (runs, materializations, check results) and the *published*
snapshot (quarantine, refusals, settlement backlog); it never opens the live warehouse, so it
is safe while a run writes.
"""

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import duckdb

from governance.snapshot import current_snapshot, open_snapshot
from pipelines.freshness import is_fresh
from pipelines.home import Home


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

    @property
    def stale(self) -> list[AssetHealth]:
        return [a for a in self.assets if not a.fresh]


def _ts(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, tz=timezone.utc) if seconds else None


def gather(home: Home, defs: dg.Definitions, now: datetime | None = None) -> Health:
    now = now or datetime.now(timezone.utc)
    health = Health()
    graph = defs.resolve_asset_graph()
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name="nightly"), limit=1)
        if runs:
            run = runs[0]
            stats = instance.get_run_stats(run.run_id)
            tags = run.tags
            health.last_run = {
                "run_id": run.run_id,
                "status": run.status.value,
                "days": tags.get("dagster/partition")
                or f"{tags.get('dagster/asset_partition_range_start')}..{tags.get('dagster/asset_partition_range_end')}",
                "started": _ts(stats.start_time),
                "ended": _ts(stats.end_time),
            }
        # Freshness is judged on the assets that promise it (the nightly job's), by their policy.
        promised = [k for k in graph.materializable_asset_keys if graph.get(k).freshness_policy is not None]
        for key in sorted(promised, key=lambda k: k.to_user_string()):
            event = instance.get_latest_materialization_event(key)
            when = _ts(event.timestamp) if event else None
            partition = event.dagster_event.partition if event and event.dagster_event else None
            health.assets.append(AssetHealth(key.to_user_string(), graph.get(key).group_name or "", partition, when, is_fresh(when, now)))
        checks = list(graph.asset_check_keys)
        for check_key, record in instance.event_log_storage.get_latest_asset_check_execution_by_key(checks).items():
            evaluation = record.event.asset_check_evaluation if record.event and record.event.dagster_event else None
            failed = record.status.value == "FAILED" or (evaluation is not None and not evaluation.passed)
            if failed:
                health.failed_checks.append(
                    {
                        "asset": check_key.asset_key.to_user_string(),
                        "check": check_key.name,
                        "description": (evaluation.description if evaluation else None) or record.status.value,
                    }
                )
    health.snapshot = current_snapshot(home.published)
    if health.snapshot and health.snapshot.exists():
        _from_snapshot(health, health.snapshot)
    return health


def _from_snapshot(health: Health, snapshot: Path) -> None:
    con = open_snapshot(snapshot)  # a DuckDB file, or the lake at its published version
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
    finally:
        con.close()
