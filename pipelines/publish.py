"""Publish: a read-only copy of the warehouse that analysts and the gateway read.

The live file has one writer; readers never open it. After a successful run the warehouse
is checkpointed, copied to `published/warehouse-<stamp>.duckdb`, made read-only, and the
pointer file `published/CURRENT` is switched atomically (write to a temp file, rename).
The last `keep` snapshots are kept.

With the warehouse on DuckLake (pipelines/warehouse.py) nothing is copied: a published snapshot
is a DuckLake snapshot *version*. `published/lake-<stamp>-v<N>.ducklake.json` records the version
(and the catalog without its password, and the data path), CURRENT is switched to it the same
atomic way, and readers attach the lake read-only at that version (time travel), so commits made
after it stay invisible to them. Rotation keeps the last `keep` published versions and expires
every other snapshot older than the newest one with DuckLake's own functions
(`ducklake_expire_snapshots`, then `ducklake_cleanup_old_files` for files unreferenced for longer
than `grace`, so a concurrent writer or reader still on an old version keeps its files a while).
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

from governance.snapshot import LAKE_ALIAS, LAKE_SUFFIX, POINTER, LakeSnapshot, current_snapshot, lake_data_path

__all__ = ["POINTER", "current_snapshot", "publish_snapshot", "publish_lake_snapshot"]


def publish_snapshot(warehouse: Path, published: Path, keep: int = 3) -> Path:
    """Copy a checkpointed, closed warehouse file into a new snapshot and switch CURRENT to it."""
    published.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"warehouse-{stamp}.duckdb"
    tmp = published / f".{name}.tmp"
    shutil.copyfile(warehouse, tmp)
    os.chmod(tmp, 0o444)
    os.replace(tmp, published / name)
    _switch(published, name)
    _rotate(published, keep, current=name)
    return published / name


def _switch(published: Path, name: str) -> None:
    pointer_tmp = published / f".{POINTER}.tmp"
    pointer_tmp.write_text(name + "\n")
    os.replace(pointer_tmp, published / POINTER)


def publish_lake_snapshot(
    con: duckdb.DuckDBPyConnection, published: Path, catalog: str, keep: int = 3, grace: timedelta = timedelta(hours=1)
) -> Path:
    """Publish the lake's latest committed version (`con`: a writer connection with the lake
    attached, after the run committed everything) and switch CURRENT to it; `catalog` is the
    catalog URL without its password."""
    published.mkdir(parents=True, exist_ok=True)
    version = int(con.execute(f"SELECT id FROM {LAKE_ALIAS}.current_snapshot()").fetchone()[0])
    now = datetime.now(timezone.utc)
    name = f"lake-{now:%Y%m%dT%H%M%S%fZ}-v{version}{LAKE_SUFFIX}"
    tmp = published / f".{name}.tmp"
    LakeSnapshot(version=version, catalog=catalog, data_path=lake_data_path(con), published_at=now.isoformat()).write(tmp)
    os.chmod(tmp, 0o444)
    os.replace(tmp, published / name)
    _switch(published, name)
    _rotate_lake(con, published, keep, current=name, grace=grace)
    return published / name


def _rotate_lake(con: duckdb.DuckDBPyConnection, published: Path, keep: int, current: str, grace: timedelta) -> None:
    snapshots = sorted(published.glob(f"lake-*{LAKE_SUFFIX}"))
    kept = [p for p in snapshots[max(0, len(snapshots) - keep):]] + [published / current]
    versions = {LakeSnapshot.read(p).version for p in kept if p.exists()}
    newest = max(versions)
    expire = [
        r[0]
        for r in con.execute(f"SELECT snapshot_id FROM ducklake_snapshots('{LAKE_ALIAS}') WHERE snapshot_id < ? ORDER BY 1", [newest]).fetchall()
        if r[0] not in versions
    ]
    if expire:
        con.execute(f"CALL ducklake_expire_snapshots('{LAKE_ALIAS}', versions => ?)", [expire])
    con.execute(
        f"CALL ducklake_cleanup_old_files('{LAKE_ALIAS}', older_than => ?::TIMESTAMPTZ)", [datetime.now(timezone.utc) - grace]
    )
    for old in snapshots:
        if old not in kept:
            old.unlink(missing_ok=True)


def _rotate(published: Path, keep: int, current: str) -> None:
    snapshots = sorted(p for p in published.glob("warehouse-*.duckdb"))
    for old in snapshots[: max(0, len(snapshots) - keep)]:
        if old.name != current:
            old.unlink(missing_ok=True)
