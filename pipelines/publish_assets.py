"""Publish the warehouse as a read-only snapshot once everything upstream succeeded, with what
each team may query built for it (governance.publication) before CURRENT switches."""

from datetime import date
from pathlib import Path

import dagster as dg

from governance.publication import data_date_of, publish_teams
from governance.rules import load_rules
from ingest.config import stop_at
from pipelines.home import PROJECT_ROOT
from pipelines.partitions import context_dates, single_run
from pipelines.resources import WRITER_POOL, WarehouseResource
from warehouse.snapshots import current_snapshot

# DuckDB cannot spill a CHECKPOINT: on the large city (52 M telemetry rows, 8.8 GB file) the
# incremental night's checkpoint failed inside the resource's 1 GB, so this step gets more.
CHECKPOINT_MEMORY_LIMIT = "4GB"


def next_data_date(window_end: date, previous: date | None) -> date:
    """The data date a new snapshot records (what every answer reports): the run's as-of day,
    the last delivery day of its window. A backfill of older days re-publishes the newer data
    the warehouse already holds, so the date never goes back before the previous snapshot's."""
    return max(window_end, previous) if previous is not None else window_end


def build_publish_asset(published_dir: Path, upstream: list[dg.AssetKey], partitions_def: dg.PartitionsDefinition, manifest: Path,
                        rules_dir: Path = PROJECT_ROOT / "governance_rules", fault: str | None = None) -> dg.AssetsDefinition:
    """`fault` (crash tests only, `IngestConfig.fault`): `in_publish` stops once the copy is written."""
    @dg.asset(
        key=dg.AssetKey(["published", "warehouse_snapshot"]),
        deps=upstream,
        group_name="governance",
        owners=["team:data-platform"],
        pool=WRITER_POOL,
        partitions_def=partitions_def,
        backfill_policy=single_run,
        description="Read-only copy of the warehouse that analysts and the query gateway read (on DuckLake: the snapshot version they attach at); CURRENT switches atomically.",
        kinds={"duckdb"},
    )
    def warehouse_snapshot(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        settings = warehouse.settings()
        teams: dict = {}
        data_date = next_data_date(context_dates(context)[-1], data_date_of(current_snapshot(published_dir)))

        def prepare(snapshot: Path) -> None:
            # the writer's own catalog login reads the new lake version; the file is attached under its live name
            credentials = (settings.catalog,) if settings.catalog else ()
            teams.update(publish_teams(snapshot, load_rules(rules_dir).values(), manifest, credentials, live_catalog=settings.file.stem,
                                       data_date=data_date))

        published = warehouse.backend().publish(
            published_dir, lambda: warehouse.connect(context, memory_limit=CHECKPOINT_MEMORY_LIMIT), prepare=prepare,
            before_switch=lambda _tmp: stop_at(fault, "in_publish"),
        )
        context.log.info(f"published {published.path} for teams {', '.join(sorted(teams))}")
        return dg.MaterializeResult(
            metadata={
                "snapshot": dg.MetadataValue.path(str(published.path)),
                "data_date": dg.MetadataValue.text(data_date.isoformat()),
                "tables": dg.MetadataValue.int(published.tables),
                "size_mb": dg.MetadataValue.float(round(published.size_bytes / 1e6, 2)),
                "teams": dg.MetadataValue.json({t: {"relations": len(b.privacy), "omitted": sorted(b.omitted), "cells": b.cells} for t, b in teams.items()}),
            }
        )

    return warehouse_snapshot
