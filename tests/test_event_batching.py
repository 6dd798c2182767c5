"""The home's SQLite event log writes a batch of per-partition materializations in one
transaction: what Dagster then knows about the asset must equal what it knows when every event
is written on its own (Dagster's own path)."""

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


JOB = dg.define_asset_job("ranged", selection=[counted, downstream], partitions_def=DAYS)
DEFS = dg.Definitions(assets=[counted, downstream], jobs=[JOB])


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
    # the planned events of the run, then each asset's ten days, each arrived as one batch
    assert spy == [20, 10, 10]
    assert batched == one_by_one
    assert batched["counted"]["partitions"] == [f"2026-01-{d:02d}" for d in range(1, 11)]
    assert batched["downstream"]["latest"] == "2026-01-10"
