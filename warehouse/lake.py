"""DuckLake plumbing: its extensions (PyPI wheels, loaded by path), secrets, attach and versions.

Credentials never go into an ATTACH string or a published file: they are handed to DuckDB as
temporary secrets, whose values `duckdb_secrets()` redacts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb

from warehouse.catalog_url import CatalogUrl
from warehouse.tables import quote_literal

LAKE_ALIAS = "lake"
# DuckDB extensions the lake needs, by extension name → the PyPI wheel's package that ships it.
LAKE_EXTENSIONS = {"postgres_scanner": "duckdb_extension_postgres_scanner", "ducklake": "duckdb_extension_ducklake"}


def extension_path(name: str) -> Path:
    """The extension binary shipped in its PyPI wheel for this duckdb version (INSTALL cannot
    download here: extensions are loaded by path or from an extension_directory)."""
    package = LAKE_EXTENSIONS[name]
    wheel = f"{package.replace('_', '-')}=={duckdb.__version__}"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the warehouse on DuckLake needs the {wheel} wheel")
    path = Path(list(spec.submodule_search_locations)[0]) / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: install {wheel} (the wheel for this duckdb)")
    return path


def extension_directory(root: Path) -> Path:
    """`<root>/v<duckdb>/<platform>/<name>.duckdb_extension`, linked to the wheels' binaries:
    what dbt-duckdb's connection autoloads from."""
    platform = duckdb.execute("PRAGMA platform").fetchone()[0]
    target_dir = root / f"v{duckdb.__version__}" / platform
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in LAKE_EXTENSIONS:
        source, link = extension_path(name), target_dir / f"{name}.duckdb_extension"
        if not link.exists() or link.resolve() != source.resolve():
            link.unlink(missing_ok=True)
            link.symlink_to(source)
    return root


def _create_secrets(con: duckdb.DuckDBPyConnection, catalog: CatalogUrl, data_path: str | None) -> str:
    """Temporary secrets for the catalog; returns the ATTACH path that uses them."""
    pg = ["TYPE postgres", f"HOST {quote_literal(catalog.host)}", f"PORT {quote_literal(catalog.port)}", f"DATABASE {quote_literal(catalog.dbname)}"]
    if catalog.user:
        pg.append(f"USER {quote_literal(catalog.user)}")
    if catalog.password:
        pg.append(f"PASSWORD {quote_literal(catalog.password)}")
    con.execute(f"CREATE OR REPLACE TEMPORARY SECRET civicflow_catalog ({', '.join(pg)})")
    # Extra libpq parameters (sslmode, …) stay in the metadata path, which holds no secret.
    metadata_path = " ".join(f"{k}={v}" for k, v in catalog.params)
    lake = [
        "TYPE ducklake",
        f"METADATA_PATH {quote_literal(metadata_path)}",
        "METADATA_PARAMETERS MAP {'TYPE': 'postgres', 'SECRET': 'civicflow_catalog'}",
    ]
    if data_path is not None:
        lake.append(f"DATA_PATH {quote_literal(data_path)}")
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
    unqualified `schema.table` names of every stage resolve in it. (`USE` is per connection:
    a `cursor()` of this connection needs `use_lake(cursor)`.)"""
    for name in LAKE_EXTENSIONS:
        con.execute(f"LOAD {quote_literal(extension_path(name))}")
    path = _create_secrets(con, catalog, data_path)
    options = []
    if read_only:
        options.append("READ_ONLY")
    if snapshot_version is not None:
        options.append(f"SNAPSHOT_VERSION {int(snapshot_version)}")
    con.execute(f"ATTACH {quote_literal(path)} AS {LAKE_ALIAS}" + (f" ({', '.join(options)})" if options else ""))
    con.execute(f"USE {LAKE_ALIAS}")


def use_lake(cur: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Point a new cursor at the lake when its connection has one attached (no-op otherwise)."""
    attached = cur.execute(
        "SELECT count(*) FROM duckdb_databases() WHERE database_name = ? AND type = 'ducklake'", [LAKE_ALIAS]
    ).fetchone()[0]
    if attached:
        cur.execute(f"USE {LAKE_ALIAS}")
    return cur


def lake_data_path(con: duckdb.DuckDBPyConnection) -> str:
    """Where the attached lake keeps its Parquet files (stored in its catalog)."""
    return con.execute(
        f"SELECT value FROM ducklake_options({quote_literal(LAKE_ALIAS)}) WHERE option_name = 'data_path'"
    ).fetchone()[0]


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """The lake's latest committed snapshot id (what a publish pins)."""
    return int(con.execute(f"SELECT id FROM {LAKE_ALIAS}.current_snapshot()").fetchone()[0])


def lake_relations(con: duckdb.DuckDBPyConnection) -> frozenset[str]:
    """`schema.table` of every table and view in the attached lake (lower case)."""
    rows = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? "
        "UNION SELECT schema_name, view_name FROM duckdb_views() WHERE database_name = ? AND NOT internal",
        [LAKE_ALIAS, LAKE_ALIAS],
    ).fetchall()
    return frozenset(f"{s}.{t}".lower() for s, t in rows)
