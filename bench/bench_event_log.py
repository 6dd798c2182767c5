"""What a ranged (backfill) run pays per partition in Dagster's event log.

A single run over a range of daily partitions records one materialization per asset per day
(that is what makes every partition green in the UI). A full rebuild of a year of the
nightly job is ~40 assets × 365 days ≈ 15,000 events, each a durable write to the instance.
This bench runs a 5-asset multi-asset over 365 daily partitions (1,825 materializations) on
a throw-away SQLite instance, and, as the in-run reference, the same number of plain SQLite
`INSERT` + `COMMIT`s (one fsync each) in the same directory: the ratio says how much of the
cost is Dagster and how much is the disk.

    .venv/bin/python bench/bench_event_log.py [--days 365] [--assets 5]
        [--storage sqlite|consolidated|postgres|home --pg-url postgresql://…]

`--storage home` is what a civicflow home uses (pipelines/instance_storage.py: a step's
per-partition materializations written in one transaction, with Dagster's batching switch on
as `civicflow run` sets it); it also runs the default SQLite storage in the same run and prints
the ratio of the two.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path


def storage_overrides(storage: str, root: Path, pg_url: str | None) -> dict:
    """Instance overrides for the event-log storage under test."""
    if storage == "sqlite":  # dagster.yaml's default: run-sharded SQLite files
        return {}
    if storage == "home":  # what pipelines/home.py writes into a home's dagster.yaml
        return {"storage": {"custom": {"module": "pipelines.instance_storage", "class": "SerialInitSqliteStorage",
                                       "config": {"base_dir": str(root / "home")}}}}
    if storage == "consolidated":  # one SQLite file for every run's events
        return {"event_log_storage": {"module": "dagster._core.storage.event_log", "class": "ConsolidatedSqliteEventLogStorage",
                                      "config": {"base_dir": str(root / "events")}}}
    if not pg_url:
        raise SystemExit("--storage postgres needs --pg-url (e.g. CIVICFLOW_TEST_PG_URL from .ci/postgres)")
    return {"storage": {"postgres": {"postgres_url": pg_url.replace("postgresql://", "postgresql+psycopg2://", 1)}}}


def dagster_seconds(days: int, assets: int, root: Path, overrides: dict | None = None) -> tuple[int, float]:
    import dagster as dg

    start = "2025-01-01"
    daily = dg.DailyPartitionsDefinition(start_date=start)
    specs = [dg.AssetSpec(f"a{i}") for i in range(assets)]

    @dg.multi_asset(specs=specs, partitions_def=daily, backfill_policy=dg.BackfillPolicy.single_run())
    def many(context):
        for s in specs:
            yield dg.MaterializeResult(asset_key=s.key)

    keys = daily.get_partition_keys()[:days]
    job = dg.define_asset_job("ranged", selection=[many]).resolve(asset_graph=dg.Definitions(assets=[many]).resolve_asset_graph())
    root.mkdir(parents=True, exist_ok=True)
    with dg.instance_for_test(temp_dir=str(root), overrides=overrides or None) as instance:
        t0 = time.perf_counter()
        result = job.execute_in_process(
            instance=instance, raise_on_error=True,
            tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
        )
        seconds = time.perf_counter() - t0
        n = sum(1 for e in instance.all_logs(result.run_id) if e.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION)
    return n, seconds


def sqlite_commit_seconds(n: int, root: Path) -> float:
    con = sqlite3.connect(root / "reference.db")
    con.execute("CREATE TABLE t (i INTEGER, body TEXT)")
    t0 = time.perf_counter()
    for i in range(n):
        con.execute("INSERT INTO t VALUES (?, ?)", (i, "x" * 1000))
        con.commit()
    seconds = time.perf_counter() - t0
    con.close()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--assets", type=int, default=5)
    ap.add_argument("--storage", choices=("sqlite", "consolidated", "postgres", "home"), default="sqlite",
                    help="event-log storage: Dagster's run-sharded SQLite, one consolidated SQLite file, PostgreSQL, "
                         "or a civicflow home's (batched) SQLite storage")
    ap.add_argument("--pg-url", help="postgresql://… of an empty database, for --storage postgres")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        if args.storage == "home":
            from pipelines.instance_storage import EVENT_BATCHING
            from pipelines.scoped_env import scoped_env

            with scoped_env(EVENT_BATCHING):
                n, dag_s = dagster_seconds(args.days, args.assets, Path(d) / "a", storage_overrides("home", Path(d), None))
            _, plain_s = dagster_seconds(args.days, args.assets, Path(d) / "b")
        else:
            n, dag_s = dagster_seconds(args.days, args.assets, Path(d), storage_overrides(args.storage, Path(d), args.pg_url))
        ref_s = sqlite_commit_seconds(n, Path(d))
    print(f"materializations: {n} ({args.assets} assets × {args.days} daily partitions, one run)")
    print(f"dagster event log ({args.storage}): {dag_s:.1f} s = {1000 * dag_s / n:.1f} ms per materialization")
    if args.storage == "home":
        print(f"Dagster's default SQLite storage, same run: {plain_s:.1f} s = {1000 * plain_s / n:.1f} ms per materialization; "
              f"the home's storage takes {dag_s / plain_s:.2f}× its time")
    print(f"reference, plain SQLite insert+commit: {1000 * ref_s / n:.2f} ms each")
    print(f"ratio: {dag_s / ref_s:.1f}× the reference commit per event")


if __name__ == "__main__":
    main()
