"""Which published warehouse snapshot is current (the `published/CURRENT` pointer), and how to
open one read-only.

Publishing writes a snapshot and then swaps the one-line pointer file atomically (write a temp
file, rename). Readers resolve the pointer for each query, so a new publish switches them over
at once while a query in flight keeps its old snapshot open.

A snapshot is one of two things:

* `warehouse-<stamp>.duckdb`: a read-only copy of the live DuckDB file (the default backend);
* `lake-<stamp>-v<N>.ducklake.json`: a DuckLake snapshot version (the warehouse on DuckLake: a
  PostgreSQL catalog plus Parquet files on a shared path). The file names the version, the
  catalog (without its password) and the data path; a reader attaches the lake read-only *at
  that version* (DuckLake time travel), so later commits of the writers stay invisible.

Credentials never go into a published file nor into an ATTACH string: they are handed to DuckDB
as secrets (whose values `duckdb_secrets()` redacts). A reader takes them from
CIVICFLOW_WAREHOUSE_READER_CATALOG (a read-only role, recommended) or CIVICFLOW_WAREHOUSE_CATALOG
when they name the same database, else leaves them to libpq (PGPASSFILE, ~/.pgpass).
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import duckdb

from governance.plan import register_lake_tables

POINTER = "CURRENT"
LAKE_ALIAS = "lake"
LAKE_SUFFIX = ".ducklake.json"
CATALOG_ENV = "CIVICFLOW_WAREHOUSE_CATALOG"
READER_CATALOG_ENV = "CIVICFLOW_WAREHOUSE_READER_CATALOG"
# DuckDB extensions the lake needs, by extension name → the PyPI wheel's package that ships it.
LAKE_EXTENSIONS = {"postgres_scanner": "duckdb_extension_postgres_scanner", "ducklake": "duckdb_extension_ducklake"}


def current_snapshot(published_dir: Path) -> Path | None:
    """The snapshot CURRENT points at, or None when nothing has been published yet."""
    pointer = Path(published_dir) / POINTER
    try:
        name = pointer.read_text().strip()
    except FileNotFoundError:
        return None
    if not name:
        return None
    return Path(published_dir) / name


# ------------------------------------------------------------------ the PostgreSQL catalog
@dataclass(frozen=True)
class CatalogUrl:
    """A PostgreSQL catalog: `postgresql://USER:PASSWORD@HOST:PORT/DBNAME[?libpq params]`."""

    host: str
    port: int
    dbname: str
    user: str = ""
    password: str = ""
    params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, url: str) -> "CatalogUrl":
        parts = urlsplit(url.strip())
        scheme = parts.scheme.split("+", 1)[0]  # postgresql+psycopg2:// is accepted too
        if scheme not in ("postgres", "postgresql") or not parts.hostname or not parts.path.strip("/"):
            raise ValueError(f"a DuckLake catalog is a PostgreSQL URL, postgresql://USER:PASSWORD@HOST:PORT/DBNAME (got scheme {parts.scheme!r})")
        return cls(
            host=parts.hostname,
            port=parts.port or 5432,
            dbname=unquote(parts.path.strip("/")),
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            params=tuple(parse_qsl(parts.query)),
        )

    def same_database(self, other: "CatalogUrl") -> bool:
        return (self.host, self.port, self.dbname) == (other.host, other.port, other.dbname)

    def public(self) -> str:
        """The URL without its password: safe to log, show and publish."""
        user = f"{quote(self.user, safe='')}@" if self.user else ""
        query = "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in self.params) if self.params else ""
        return f"postgresql://{user}{self.host}:{self.port}/{quote(self.dbname, safe='')}{query}"


def _lit(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def extension_path(name: str) -> Path:
    """The extension binary shipped in its PyPI wheel for this duckdb version (INSTALL cannot
    download here: extensions are loaded by path or from an extension_directory)."""
    package = LAKE_EXTENSIONS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the warehouse on DuckLake needs the {package.replace('_', '-')}=={duckdb.__version__} wheel")
    path = Path(list(spec.submodule_search_locations)[0]) / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: install {package.replace('_', '-')}=={duckdb.__version__} (the wheel for this duckdb)")
    return path


def load_lake_extensions(con: duckdb.DuckDBPyConnection) -> None:
    for name in LAKE_EXTENSIONS:
        con.execute(f"LOAD {_lit(extension_path(name))}")


def create_lake_secrets(con: duckdb.DuckDBPyConnection, catalog: CatalogUrl, data_path: str | None = None) -> str:
    """Temporary (in-memory) secrets for the catalog; returns the ATTACH path that uses them."""
    pg = ["TYPE postgres", f"HOST {_lit(catalog.host)}", f"PORT {_lit(catalog.port)}", f"DATABASE {_lit(catalog.dbname)}"]
    if catalog.user:
        pg.append(f"USER {_lit(catalog.user)}")
    if catalog.password:
        pg.append(f"PASSWORD {_lit(catalog.password)}")
    con.execute(f"CREATE OR REPLACE TEMPORARY SECRET civicflow_catalog ({', '.join(pg)})")
    # Extra libpq parameters (sslmode, …) stay in the metadata path, which holds no secret.
    metadata_path = " ".join(f"{k}={v}" for k, v in catalog.params)
    lake = ["TYPE ducklake", f"METADATA_PATH {_lit(metadata_path)}", "METADATA_PARAMETERS MAP {'TYPE': 'postgres', 'SECRET': 'civicflow_catalog'}"]
    if data_path is not None:
        lake.append(f"DATA_PATH {_lit(data_path)}")
    con.execute(f"CREATE OR REPLACE TEMPORARY SECRET civicflow_lake ({', '.join(lake)})")
    return "ducklake:civicflow_lake"


def attach_lake(
    con: duckdb.DuckDBPyConnection,
    catalog: CatalogUrl,
    *,
    data_path: str | None = None,
    read_only: bool = False,
    snapshot_version: int | None = None,
) -> None:
    """Attach the DuckLake as `lake` and make it the default catalog of this connection, so the
    unqualified `schema.table` names of the loader, the forecasts and analysts resolve in it.
    (`USE` is per connection: a `cursor()` of this connection needs `use_lake(cursor)`.)"""
    load_lake_extensions(con)
    path = create_lake_secrets(con, catalog, data_path)
    options = []
    if read_only:
        options.append("READ_ONLY")
    if snapshot_version is not None:
        options.append(f"SNAPSHOT_VERSION {int(snapshot_version)}")
    con.execute(f"ATTACH {_lit(path)} AS {LAKE_ALIAS}" + (f" ({', '.join(options)})" if options else ""))
    con.execute(f"USE {LAKE_ALIAS}")


def use_lake(cur: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Point a new cursor at the lake when its connection has one attached (no-op otherwise)."""
    if cur.execute("SELECT count(*) FROM duckdb_databases() WHERE database_name = ? AND type = 'ducklake'", [LAKE_ALIAS]).fetchone()[0]:
        cur.execute(f"USE {LAKE_ALIAS}")
    return cur


def lake_data_path(con: duckdb.DuckDBPyConnection) -> str:
    """Where the attached lake keeps its Parquet files (stored in its catalog)."""
    return con.execute(f"SELECT value FROM ducklake_options({_lit(LAKE_ALIAS)}) WHERE option_name = 'data_path'").fetchone()[0]


# ------------------------------------------------------------------ published lake snapshots
@dataclass(frozen=True)
class LakeSnapshot:
    """What `lake-<stamp>-v<N>.ducklake.json` holds: enough to attach the lake at version N."""

    version: int
    catalog: str  # CatalogUrl.public(): no password
    data_path: str
    published_at: str
    format: str = "ducklake"

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> "LakeSnapshot":
        data = json.loads(Path(path).read_text())
        if data.get("format") != "ducklake":
            raise ValueError(f"{path} is not a published DuckLake snapshot")
        return cls(**data)


def is_lake_snapshot(path: Path) -> bool:
    return Path(path).name.endswith(LAKE_SUFFIX)


def reader_catalog(published: CatalogUrl) -> CatalogUrl:
    """The published catalog with this reader's own credentials, when its environment names the
    same database (READER first: a role that can only SELECT the catalog); else as published,
    and libpq finds the password (PGPASSFILE, ~/.pgpass)."""
    for env in (READER_CATALOG_ENV, CATALOG_ENV):
        url = os.environ.get(env)
        if url:
            mine = CatalogUrl.parse(url)
            if mine.same_database(published):
                return mine
    return published


def open_snapshot(snapshot: Path, config: dict | None = None) -> duckdb.DuckDBPyConnection:
    """Open a published snapshot read-only: a DuckDB file, or the lake at its published version.

    `config` is the DuckDB configuration of the caller. For a lake, `enable_external_access`
    false is applied right *after* the attach (the attach itself reaches PostgreSQL and loads two
    extensions by path); the lake's data path is then the only directory DuckDB may read, so SQL
    still cannot read other files, attach databases or load extensions.
    """
    config = dict(config or {})
    if not is_lake_snapshot(snapshot):
        return duckdb.connect(str(snapshot), read_only=True, config=config)
    lake = LakeSnapshot.read(snapshot)
    lock_down = config.pop("enable_external_access", True) is False
    con = duckdb.connect(":memory:", config=config)
    try:
        attach_lake(con, reader_catalog(CatalogUrl.parse(lake.catalog)), read_only=True, snapshot_version=lake.version)
        # The plan names a DuckLake table without its schema: tell the policy which ones exist.
        register_lake_tables(
            [f"{s}.{t}" for s, t in con.execute("SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ?", [LAKE_ALIAS]).fetchall()]
        )
        if lock_down:
            data_path = lake_data_path(con)
            con.execute(f"SET allowed_directories = [{_lit(data_path.rstrip('/') + '/')}]")
            con.execute("SET enable_external_access = false")
    except BaseException:
        con.close()
        raise
    return con
