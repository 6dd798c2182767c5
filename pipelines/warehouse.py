"""Where the live warehouse is and how to open it: the one place that decides.

Two backends, chosen by configuration:

* default: the DuckDB file `<home>/warehouse.duckdb` (one read-write process at a time);
* DuckLake, when `CIVICFLOW_WAREHOUSE_CATALOG=postgresql://USER:PASSWORD@HOST:PORT/DB` is set:
  the catalog in that PostgreSQL database, the data as Parquet files under
  `CIVICFLOW_WAREHOUSE_DATA` (default `<home>/lake`; a shared path when several machines
  write or read). Several writers may commit concurrently (optimistic concurrency: a
  conflicting commit fails and is retried), readers see committed snapshots only.

Both open as a DuckDB connection whose default catalog is the warehouse, so the loader's,
the forecasts' and dbt's `schema.table` names work unchanged. dbt reads the same settings
from environment variables that `dbt_env()` computes (see dbt_project/profiles.yml).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import duckdb

from governance.snapshot import CATALOG_ENV, LAKE_ALIAS, LAKE_EXTENSIONS, CatalogUrl, attach_lake, extension_path

DATA_ENV = "CIVICFLOW_WAREHOUSE_DATA"
# Derived for dbt by prepare_home (profiles.yml cannot parse a URL). DBT_ENV_SECRET_* values
# are scrubbed from dbt's logs and only allowed in profiles.yml.
DBT_ENV = {
    "extensions": "CIVICFLOW_DUCKDB_EXTENSIONS",
    "data": "CIVICFLOW_LAKE_DATA_PATH",
    "host": "CIVICFLOW_LAKE_PG_HOST",
    "port": "CIVICFLOW_LAKE_PG_PORT",
    "dbname": "CIVICFLOW_LAKE_PG_DBNAME",
    "user": "CIVICFLOW_LAKE_PG_USER",
    "password": "DBT_ENV_SECRET_CIVICFLOW_LAKE_PG_PASSWORD",
    "params": "CIVICFLOW_LAKE_PG_PARAMS",
}


@dataclass(frozen=True)
class Warehouse:
    """The live warehouse: a DuckDB file, or a DuckLake (catalog + data path) when configured."""

    path: Path  # the DuckDB file of the default backend
    catalog: CatalogUrl | None = None
    data_path: Path | None = None

    @property
    def is_lake(self) -> bool:
        return self.catalog is not None

    def describe(self) -> str:
        """For logs and messages: never the password."""
        if self.catalog is None:
            return str(self.path)
        return f"DuckLake {self.catalog.public()} (data {self.data_path})"


def warehouse_at(path: Path | str) -> Warehouse:
    """The warehouse whose default-backend file is `path` (<home>/warehouse.duckdb), on DuckLake
    when CIVICFLOW_WAREHOUSE_CATALOG is set (data in CIVICFLOW_WAREHOUSE_DATA, else <home>/lake)."""
    path = Path(path)
    url = os.environ.get(CATALOG_ENV, "").strip()
    if not url:
        return Warehouse(path)
    data = os.environ.get(DATA_ENV, "").strip()
    return Warehouse(path, CatalogUrl.parse(url), Path(data).expanduser().resolve() if data else path.parent / "lake")


def exists(wh: Warehouse) -> bool:
    """Whether there is anything to read yet (a lake always exists once configured)."""
    return wh.is_lake or wh.path.exists()


def open_warehouse(wh: Warehouse, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection to the live warehouse (no retry: see pipelines.resources.connect_with_retry)."""
    if wh.catalog is None:
        return duckdb.connect(str(wh.path), read_only=read_only)
    assert wh.data_path is not None
    wh.data_path.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:")
    try:
        attach_lake(con, wh.catalog, data_path=str(wh.data_path).rstrip("/") + "/", read_only=read_only)
    except BaseException:
        con.close()
        raise
    return con


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """The lake's latest committed snapshot id (what a publish pins)."""
    return int(con.execute(f"SELECT id FROM {LAKE_ALIAS}.current_snapshot()").fetchone()[0])


def extension_directory(home_root: Path) -> Path:
    """`<home>/duckdb_extensions/v<duckdb>/<platform>/<name>.duckdb_extension`, linked to the
    wheels' binaries: what dbt-duckdb's connection autoloads from (INSTALL cannot download)."""
    root = home_root / "duckdb_extensions"
    platform = duckdb.execute("PRAGMA platform").fetchone()[0]
    target_dir = root / f"v{duckdb.__version__}" / platform
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in LAKE_EXTENSIONS:
        source, link = extension_path(name), target_dir / f"{name}.duckdb_extension"
        if not link.exists() or link.resolve() != source.resolve():
            link.unlink(missing_ok=True)
            link.symlink_to(source)
    return root


def dbt_env(wh: Warehouse, home_root: Path) -> dict[str, str | None]:
    """Environment for dbt's `lake` output (None: unset it, the default backend)."""
    if wh.catalog is None:
        return {var: None for var in DBT_ENV.values()}
    c = wh.catalog
    return {
        DBT_ENV["extensions"]: str(extension_directory(home_root)),
        DBT_ENV["data"]: str(wh.data_path).rstrip("/") + "/",
        DBT_ENV["host"]: c.host,
        DBT_ENV["port"]: str(c.port),
        DBT_ENV["dbname"]: c.dbname,
        DBT_ENV["user"]: c.user,
        DBT_ENV["password"]: c.password,
        DBT_ENV["params"]: " ".join(f"{k}={v}" for k, v in c.params),
    }
