"""The home's SQLite event log writes a batch of per-partition materializations in one
transaction: what Dagster then knows about the asset must equal what it knows when every event
is written on its own (Dagster's own path)."""

import os
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines.instance_storage import EVENT_BATCHING, BatchingSqliteEventLogStorage
from pipelines.scoped_env import scoped_env

DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-01-11")


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def counted(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"days": len(context.partition_keys)})


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run(), deps=[counted])
def downstream(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"first": context.partition_keys[0]})


@dg.asset_check(asset=counted, blocking=True)
def counted_positive() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True, metadata={"checked": 1})


JOB = dg.define_asset_job("ranged", selection=dg.AssetSelection.assets(counted, downstream), partitions_def=DAYS)
DEFS = dg.Definitions(assets=[counted, downstream], asset_checks=[counted_positive], jobs=[JOB])


def _instance(root) -> dg.DagsterInstance:
    """An instance on the storage a home's dagster.yaml names (pipelines/home.py)."""
    storage = {"custom": {"module": "pipelines.instance_storage", "class": "SerialInitSqliteStorage", "config": {"base_dir": str(root / "storage")}}}
    root.mkdir(parents=True, exist_ok=True)
    (root / "dagster.yaml").write_text(yaml.safe_dump({"storage": storage, "telemetry": {"enabled": False}}))
    return dg.DagsterInstance.from_config(str(root))


def _what_dagster_knows(instance: dg.DagsterInstance, run_id: str) -> dict:
    known = {}
    for key in (dg.AssetKey("counted"), dg.AssetKey("downstream")):
        records = instance.fetch_materializations(key, limit=1000).records
        known[key.to_user_string()] = {
            "partitions": sorted(instance.get_materialized_partitions(key)),
            "events": sorted((r.partition_key, r.run_id == run_id) for r in records),
            "latest": instance.get_latest_materialization_event(key).dagster_event.partition,
            "checks": sorted(
                (e.key.name, e.status.value, e.run_id == run_id)
                for e in instance.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(key, "counted_positive"), limit=10)
            ) if key == dg.AssetKey("counted") else [],
            "tags": sorted(
                (r.partition_key, r.asset_materialization.tags.get("dagster/partition") if r.asset_materialization.tags else None) for r in records
            ),
        }
    return known


def _run_range(root, env: dict) -> dict:
    with _instance(root) as instance, scoped_env(env):
        assert isinstance(instance.event_log_storage, BatchingSqliteEventLogStorage)
        result = DEFS.resolve_job_def("ranged").execute_in_process(
            instance=instance,
            tags={"dagster/asset_partition_range_start": "2026-01-01", "dagster/asset_partition_range_end": "2026-01-10"},
        )
        assert result.success
        return _what_dagster_knows(instance, result.run_id)


@pytest.fixture
def spy(monkeypatch):
    """Counts the batches the storage writes in one transaction, so the test knows which path ran."""
    written = []
    original = BatchingSqliteEventLogStorage.store_event_batch

    def counting(self, events):
        written.append(len(events))
        return original(self, events)

    monkeypatch.setattr(BatchingSqliteEventLogStorage, "store_event_batch", counting)
    return written


def test_a_batched_range_leaves_dagster_knowing_exactly_what_one_by_one_writes_leave(tmp_path, spy):
    one_by_one = _run_range(tmp_path / "plain", {"DAGSTER_EVENT_BATCH_SIZE": None})
    assert spy == []  # Dagster's own path: no batch reached the storage
    batched = _run_range(tmp_path / "batched", EVENT_BATCHING)
    # the planned events of the run (ten days of two assets and the check), then each asset's
    # ten days, each arrived as one batch
    assert spy == [21, 10, 10]
    assert batched == one_by_one
    assert batched["counted"]["partitions"] == [f"2026-01-{d:02d}" for d in range(1, 11)]
    assert batched["downstream"]["latest"] == "2026-01-10"
    assert ("counted_positive", "SUCCEEDED", True) in batched["counted"]["checks"]


def test_a_batch_that_fails_midway_leaves_nothing_half_written(tmp_path, monkeypatch):
    """Dagster stores a failed batch's events one by one: the batch must have rolled back whole,
    or those events would be stored twice."""
    one_by_one = _run_range(tmp_path / "plain", {"DAGSTER_EVENT_BATCH_SIZE": None})
    calls = {"n": 0}
    original = BatchingSqliteEventLogStorage._store_asset_event

    def fails_once(self, conn, event, event_id):
        calls["n"] += 1
        if calls["n"] == 25:  # in the middle of the first asset's ten days
            raise RuntimeError("disk hiccup")
        return original(self, conn, event, event_id)

    monkeypatch.setattr(BatchingSqliteEventLogStorage, "_store_asset_event", fails_once)
    assert _run_range(tmp_path / "batched", EVENT_BATCHING) == one_by_one
    assert calls["n"] > 25


def _deleted_files_held_open() -> list[str]:
    fds = Path("/proc/self/fd")
    return [t for t in (os.readlink(fd) for fd in fds.iterdir() if fd.is_symlink()) if t.endswith("(deleted)")] if fds.is_dir() else []


def test_wiping_the_instance_leaves_no_connection_on_a_deleted_file(tmp_path):
    """The storage keeps its connections open between events; `dagster instance wipe` deletes
    the run files, whose disk space must then be freed (no connection holds them), and a new
    run lands in a new file that Dagster reads back."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to see which files the process holds open")
    with _instance(tmp_path / "home") as instance:
        first = DEFS.resolve_job_def("ranged").execute_in_process(instance=instance, partition_key="2026-01-01")
        instance.wipe()
        assert not [f for f in _deleted_files_held_open() if str(tmp_path) in f]
        second = DEFS.resolve_job_def("ranged").execute_in_process(instance=instance, partition_key="2026-01-02")
        assert first.success and second.success
        assert instance.get_materialized_partitions(dg.AssetKey("counted")) == {"2026-01-02"}
        assert any(e.dagster_event_type == dg.DagsterEventType.RUN_SUCCESS for e in instance.all_logs(second.run_id))


def test_a_long_lived_process_keeps_only_a_few_event_log_files_open(tmp_path, monkeypatch):
    """The webserver and the daemon read the events of run after run: the connections kept open
    are bounded, the least recently used closed first."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to see which files the process holds open")
    import pipelines.instance_storage as storage

    monkeypatch.setattr(storage, "OPEN_FILES", 3)
    with _instance(tmp_path / "home") as instance:
        runs = [DEFS.resolve_job_def("ranged").execute_in_process(instance=instance, partition_key=f"2026-01-0{d}").run_id for d in range(1, 6)]
        for run_id in runs:
            assert instance.all_logs(run_id)
        fds = Path("/proc/self/fd")
        open_dbs = {os.readlink(fd) for fd in fds.iterdir() if fd.is_symlink() and os.readlink(fd).startswith(str(tmp_path))}
        open_dbs = {f for f in open_dbs if f.endswith(".db")}
        assert 1 <= len(open_dbs) <= 3, open_dbs
        assert any(runs[-1] in f for f in open_dbs)  # the most recent is among them
