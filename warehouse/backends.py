"""One interface, two implementations: the live warehouse as a DuckDB file or as a DuckLake.

Every stage opens, publishes, resets and describes the warehouse through `Backend`, chosen once
from the settings by `backend_for`; no caller branches on which one it is.

* `DuckDBFile`: `<home>/warehouse.duckdb`, one read-write process at a time. Publishing
  checkpoints it and copies it to `published/warehouse-<stamp>.duckdb` (read-only).
* `DuckLake`: the catalog in PostgreSQL, the data as Parquet under a data path. Several writers
  may commit (optimistic concurrency), readers see committed snapshots only. Publishing records
  the latest version in `published/lake-<stamp>-v<N>.ducklake.json`; rotation expires the other
  versions with DuckLake's own functions, after a grace period for readers still on them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import duckdb

from warehouse.catalog_url import CatalogUrl
from warehouse.lake import LAKE_ALIAS, attach_lake, current_version, extension_directory, lake_data_path
from warehouse.retry import WarehouseLocked, WarehouseUnavailable
from warehouse.settings import WarehouseSettings
from warehouse.snapshots import FILE_PREFIX, LAKE_SUFFIX, LakeSnapshot, switch_current, teams_dir, write_read_only
from warehouse.tables import user_table_count

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]
# Called with a new snapshot's path before CURRENT switches to it: builds what is derived from it
# (each team's relations, governance.publication) under `teams_dir(snapshot)`.
Prepare = Callable[[Path], None]
# Called with a new snapshot's temporary path once it is written, before it is renamed (the
# crash tests stop there).
BeforeSwitch = Callable[[Path], None]

# What dbt's `lake` output in dbt_project/profiles.yml reads (profiles.yml cannot parse a URL).
# DBT_ENV_SECRET_* values are scrubbed from dbt's logs and only allowed in profiles.yml.
DBT_LAKE_ENV = {
    "extensions": "CIVICFLOW_DUCKDB_EXTENSIONS",
    "data": "CIVICFLOW_LAKE_DATA_PATH",
    "host": "CIVICFLOW_LAKE_PG_HOST",
    "port": "CIVICFLOW_LAKE_PG_PORT",
    "dbname": "CIVICFLOW_LAKE_PG_DBNAME",
    "user": "CIVICFLOW_LAKE_PG_USER",
    "password": "DBT_ENV_SECRET_CIVICFLOW_LAKE_PG_PASSWORD",
    "params": "CIVICFLOW_LAKE_PG_PARAMS",
}
DBT_FILE_ENV = "CIVICFLOW_WAREHOUSE"
DBT_TARGET_ENV = "CIVICFLOW_DBT_TARGET"


@dataclass(frozen=True)
class Published:
    path: Path
    tables: int
    size_bytes: int


class Backend(Protocol):
    kind: str  # "duckdb" | "ducklake", for metadata and messages

    def describe(self) -> str:
        """For logs and messages: never a password."""

    def exists(self) -> bool:
        """Whether there is anything to read yet."""

    def connect(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """A connection whose default catalog is the warehouse (raises WarehouseBusy subclasses
        for a transient failure; warehouse.retry waits them out)."""

    def publish(self, published_dir: Path, connect: Connect | None = None, keep: int = 3, prepare: Prepare | None = None,
                before_switch: BeforeSwitch | None = None) -> Published:
        """Make what the run committed readable as a new snapshot and switch CURRENT to it
        (`connect`: how to open the writer's connection, default `connect()`; `prepare`: run on
        the new snapshot before the switch — if it raises, CURRENT stays where it was;
        `before_switch` hears the snapshot's temporary path once it is written, before it is
        renamed and CURRENT moves: the crash tests stop there)."""

    def reset(self, recovered_dir: Path) -> str | None:
        """Empty the warehouse for a rebuild, keeping the old state recoverable; says where."""

    def dbt_env(self, home_root: Path) -> dict[str, str | None]:
        """Environment for dbt (None: unset the variable)."""


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


@dataclass(frozen=True)
class DuckDBFile:
    path: Path
    kind: str = "duckdb"

    def describe(self) -> str:
        return str(self.path)

    def exists(self) -> bool:
        return self.path.exists()

    def connect(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise WarehouseLocked(f"warehouse {self.path} is locked by another process: {exc}") from exc
            raise

    def publish(self, published_dir: Path, connect: Connect | None = None, keep: int = 3, prepare: Prepare | None = None,
                before_switch: BeforeSwitch | None = None) -> Published:
        published_dir.mkdir(parents=True, exist_ok=True)
        with (connect or (lambda: closing(self.connect())))() as con:
            tables = user_table_count(con)
            con.execute("CHECKPOINT")
        # Copied once the connection is closed: nothing can write between CHECKPOINT and the copy.
        path = write_read_only(published_dir, f"{FILE_PREFIX}{_stamp()}.duckdb", lambda tmp: shutil.copyfile(self.path, tmp), before_switch)
        _prepare(path, prepare)
        switch_current(published_dir, path.name)
        snapshots = sorted(published_dir.glob(f"{FILE_PREFIX}*.duckdb"))
        for old in snapshots[: max(0, len(snapshots) - keep)]:
            if old.name != path.name:
                _remove_snapshot(old)
        return Published(path, tables, path.stat().st_size)

    def reset(self, recovered_dir: Path) -> str | None:
        if not self.path.exists():
            return None
        target = recovered_dir / f"warehouse-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.duckdb"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.path.rename(target)
        wal = self.path.with_name(self.path.name + ".wal")
        if wal.exists():
            wal.rename(target.with_name(target.name + ".wal"))
        return str(target)

    def dbt_env(self, home_root: Path) -> dict[str, str | None]:
        return {DBT_FILE_ENV: str(self.path), DBT_TARGET_ENV: "dev"} | {var: None for var in DBT_LAKE_ENV.values()}


@dataclass(frozen=True)
class DuckLake:
    catalog: CatalogUrl
    data_path: Path
    file: Path  # the default backend's file: dbt's profile still names a path
    grace: timedelta = timedelta(hours=1)  # unreferenced files older than this are removed
    kind: str = "ducklake"

    def describe(self) -> str:
        return f"DuckLake {self.catalog.public()} (data {self.data_path})"

    def exists(self) -> bool:
        return True  # a configured lake always exists

    def connect(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        self.data_path.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(":memory:")
        try:
            attach_lake(con, self.catalog, data_path=str(self.data_path).rstrip("/") + "/", read_only=read_only)
        except duckdb.IOException as exc:
            con.close()
            if "connect" in str(exc).lower():
                raise WarehouseUnavailable(f"warehouse catalog {self.describe()} unreachable: {exc}") from exc
            raise
        except BaseException:
            con.close()
            raise
        return con

    def publish(self, published_dir: Path, connect: Connect | None = None, keep: int = 3, prepare: Prepare | None = None,
                before_switch: BeforeSwitch | None = None) -> Published:
        published_dir.mkdir(parents=True, exist_ok=True)
        with (connect or (lambda: closing(self.connect())))() as con:
            tables = user_table_count(con)
            version = current_version(con)
            now = datetime.now(UTC)
            record = LakeSnapshot(version=version, catalog=self.catalog.public(), data_path=lake_data_path(con), published_at=now.isoformat())
            path = write_read_only(published_dir, f"lake-{now:%Y%m%dT%H%M%S%fZ}-v{version}{LAKE_SUFFIX}", record.write, before_switch)
            _prepare(path, prepare)
            switch_current(published_dir, path.name)
            self._rotate(con, published_dir, keep, current=path)
            size = con.execute(f"SELECT coalesce(sum(file_size_bytes), 0) FROM ducklake_table_info('{LAKE_ALIAS}')").fetchone()[0]
        return Published(path, tables, int(size))

    def _rotate(self, con: duckdb.DuckDBPyConnection, published_dir: Path, keep: int, current: Path) -> None:
        snapshots = sorted(published_dir.glob(f"lake-*{LAKE_SUFFIX}"))
        kept = snapshots[max(0, len(snapshots) - keep):] + [current]
        versions = {LakeSnapshot.read(p).version for p in kept if p.exists()}
        expire = [
            r[0]
            for r in con.execute(
                f"SELECT snapshot_id FROM ducklake_snapshots('{LAKE_ALIAS}') WHERE snapshot_id < ? ORDER BY 1", [max(versions)]
            ).fetchall()
            if r[0] not in versions
        ]
        if expire:
            con.execute(f"CALL ducklake_expire_snapshots('{LAKE_ALIAS}', versions => ?)", [expire])
        con.execute(
            f"CALL ducklake_cleanup_old_files('{LAKE_ALIAS}', older_than => ?::TIMESTAMPTZ)", [datetime.now(UTC) - self.grace]
        )
        for old in snapshots:
            if old not in kept:
                _remove_snapshot(old)

    def reset(self, recovered_dir: Path) -> str | None:
        """Drop every view, table and schema of the lake in one commit. Nothing is lost at once:
        the state before stays readable by time travel at its version until rotated out."""
        con = self.connect()
        try:
            before = current_version(con)
            con.execute("BEGIN TRANSACTION")
            for schema, name in con.execute(
                "SELECT schema_name, view_name FROM duckdb_views() WHERE database_name = ? AND NOT internal", [LAKE_ALIAS]
            ).fetchall():
                con.execute(f'DROP VIEW {LAKE_ALIAS}."{schema}"."{name}"')
            for schema, name in con.execute(
                "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ?", [LAKE_ALIAS]
            ).fetchall():
                con.execute(f'DROP TABLE {LAKE_ALIAS}."{schema}"."{name}"')
            for (schema,) in con.execute(
                "SELECT schema_name FROM duckdb_schemas() WHERE database_name = ? AND schema_name <> 'main'", [LAKE_ALIAS]
            ).fetchall():
                con.execute(f'DROP SCHEMA {LAKE_ALIAS}."{schema}"')
            con.execute("COMMIT")
        finally:
            con.close()
        return f"{self.describe()} at snapshot version {before} (time travel: ATTACH … (SNAPSHOT_VERSION {before}))"

    def dbt_env(self, home_root: Path) -> dict[str, str | None]:
        c = self.catalog
        return {
            DBT_FILE_ENV: str(self.file),
            DBT_TARGET_ENV: "lake",
            DBT_LAKE_ENV["extensions"]: str(extension_directory(home_root / "duckdb_extensions")),
            DBT_LAKE_ENV["data"]: str(self.data_path).rstrip("/") + "/",
            DBT_LAKE_ENV["host"]: c.host,
            DBT_LAKE_ENV["port"]: str(c.port),
            DBT_LAKE_ENV["dbname"]: c.dbname,
            DBT_LAKE_ENV["user"]: c.user,
            DBT_LAKE_ENV["password"]: c.password,
            DBT_LAKE_ENV["params"]: " ".join(f"{k}={v}" for k, v in c.params),
        }


def _prepare(snapshot: Path, prepare: Prepare | None) -> None:
    if prepare is None:
        return
    try:
        prepare(snapshot)
    except BaseException:  # never leave a snapshot CURRENT could not serve
        _remove_snapshot(snapshot)
        raise


def _remove_snapshot(snapshot: Path) -> None:
    snapshot.unlink(missing_ok=True)
    shutil.rmtree(teams_dir(snapshot), ignore_errors=True)


def backend_for(settings: WarehouseSettings) -> Backend:
    if settings.catalog is None:
        return DuckDBFile(settings.file)
    assert settings.data_path is not None
    return DuckLake(settings.catalog, settings.data_path, settings.file)
