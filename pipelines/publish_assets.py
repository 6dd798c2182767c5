"""Publish the warehouse as a read-only snapshot once everything upstream succeeded."""


from pathlib import Path

import dagster as dg

from pipelines.partitions import daily, single_run
from pipelines.publish import publish_snapshot
from pipelines.resources import WRITER_POOL, WarehouseResource


def build_publish_asset(published_dir: Path, upstream: list[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        key=dg.AssetKey(["published", "warehouse_snapshot"]),
        deps=upstream,
        group_name="governance",
        owners=["team:data-platform"],
        pool=WRITER_POOL,
        partitions_def=daily,
        backfill_policy=single_run,
        description="Read-only copy of the warehouse that analysts and the query gateway read; CURRENT switches atomically.",
        kinds={"duckdb"},
    )
    def warehouse_snapshot(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        with warehouse.connect(context) as con:
            con.execute("CHECKPOINT")
            tables = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('information_schema', 'pg_catalog')"
            ).fetchone()[0]
        snapshot = publish_snapshot(Path(warehouse.path), published_dir)
        context.log.info(f"published {snapshot}")
        return dg.MaterializeResult(
            metadata={
                "snapshot": dg.MetadataValue.path(str(snapshot)),
                "tables": dg.MetadataValue.int(int(tables)),
                "size_mb": dg.MetadataValue.float(round(snapshot.stat().st_size / 1e6, 2)),
            }
        )

    return warehouse_snapshot
