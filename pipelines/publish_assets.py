"""Publish the warehouse as a read-only snapshot once everything upstream succeeded."""


from pathlib import Path

import dagster as dg

from pipelines.partitions import daily, single_run
from pipelines.publish import publish_lake_snapshot, publish_snapshot
from pipelines.resources import WRITER_POOL, WarehouseResource

# DuckDB cannot spill a CHECKPOINT: on the large city (52 M telemetry rows, 8.8 GB file) the
# incremental night's checkpoint failed inside the resource's 1 GB ("could not allocate
# block", 953.5 of 953.6 MiB used), so the step that checkpoints gets more.
CHECKPOINT_MEMORY_LIMIT = "4GB"


def build_publish_asset(published_dir: Path, upstream: list[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        key=dg.AssetKey(["published", "warehouse_snapshot"]),
        deps=upstream,
        group_name="governance",
        owners=["team:data-platform"],
        pool=WRITER_POOL,
        partitions_def=daily,
        backfill_policy=single_run,
        description="Read-only copy of the warehouse that analysts and the query gateway read (on DuckLake: the snapshot version they attach at); CURRENT switches atomically.",
        kinds={"duckdb"},
    )
    def warehouse_snapshot(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        wh = warehouse.warehouse()
        with warehouse.connect(context, memory_limit=CHECKPOINT_MEMORY_LIMIT) as con:
            tables = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() "
                "AND table_schema NOT IN ('information_schema', 'pg_catalog')"
            ).fetchone()[0]
            if wh.catalog is not None:
                # Nothing to copy: the run's commits are in the lake; publish their version.
                snapshot = publish_lake_snapshot(con, published_dir, wh.catalog.public())
                size = con.execute("SELECT coalesce(sum(file_size_bytes), 0) FROM ducklake_table_info('lake')").fetchone()[0]
            else:
                con.execute("CHECKPOINT")
        if wh.catalog is None:
            snapshot = publish_snapshot(Path(warehouse.path), published_dir)
            size = snapshot.stat().st_size
        context.log.info(f"published {snapshot}")
        return dg.MaterializeResult(
            metadata={
                "snapshot": dg.MetadataValue.path(str(snapshot)),
                "tables": dg.MetadataValue.int(int(tables)),
                "size_mb": dg.MetadataValue.float(round(int(size) / 1e6, 2)),
            }
        )

    return warehouse_snapshot
