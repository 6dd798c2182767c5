"""The warehouse configuration: declared once, typed, and the only reader of its variables.

The edge (the CLI, the Dagster definitions) calls `WarehouseSettings.from_env(os.environ, home)`
once and passes the result down; nothing below reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from warehouse.catalog_url import CatalogUrl

CATALOG_ENV = "CIVICFLOW_WAREHOUSE_CATALOG"
DATA_ENV = "CIVICFLOW_WAREHOUSE_DATA"
READER_CATALOG_ENV = "CIVICFLOW_WAREHOUSE_READER_CATALOG"
MEMORY_ENV = "CIVICFLOW_WAREHOUSE_MEMORY_LIMIT"
THREADS_ENV = "CIVICFLOW_WAREHOUSE_THREADS"

# What an operator may set, for `docs/operations.md` and `civicflow settings`.
VARIABLES = {
    CATALOG_ENV: "DuckLake catalog, postgresql://USER:PASSWORD@HOST:PORT/DB; unset: the DuckDB file <home>/warehouse.duckdb",
    DATA_ENV: "DuckLake data path (Parquet files); default <home>/lake",
    READER_CATALOG_ENV: "the same catalog with a read-only role, used by readers of published snapshots (the gateway)",
    MEMORY_ENV: "DuckDB memory_limit of a pipeline step's warehouse connection (default 1GB; DuckDB spills past it)",
    THREADS_ENV: "DuckDB threads of a pipeline step's warehouse connection (default 2)",
}


def env_value(env: Mapping[str, str], name: str) -> str | None:
    """A variable's value, stripped; empty counts as unset. Every settings reader uses it."""
    value = env.get(name, "").strip()
    return value or None


@dataclass(frozen=True)
class WarehouseSettings:
    """Where the live warehouse is and how a step's connection is sized."""

    file: Path  # the DuckDB file of the default backend (<home>/warehouse.duckdb)
    catalog: CatalogUrl | None = None  # set: the warehouse is a DuckLake with this catalog
    data_path: Path | None = None  # the lake's Parquet files
    reader_catalog: CatalogUrl | None = None
    # DuckDB spills past it; keeps ingest of any file size under 2 GB RSS (bench_ingest).
    memory_limit: str = "1GB"
    threads: int = 2

    @classmethod
    def from_env(cls, env: Mapping[str, str], home_root: Path) -> WarehouseSettings:
        home_root = Path(home_root)
        url, reader = env_value(env, CATALOG_ENV), env_value(env, READER_CATALOG_ENV)
        data, threads = env_value(env, DATA_ENV), env_value(env, THREADS_ENV)
        return cls(
            file=home_root / "warehouse.duckdb",
            catalog=CatalogUrl.parse(url) if url else None,
            data_path=(Path(data).expanduser().resolve() if data else home_root / "lake") if url else None,
            reader_catalog=CatalogUrl.parse(reader) if reader else None,
            memory_limit=env_value(env, MEMORY_ENV) or cls.memory_limit,
            threads=int(threads) if threads else cls.threads,
        )

    def reader_credentials(self) -> tuple[CatalogUrl, ...]:
        """Catalogs a reader of a published lake snapshot may log in with (read-only role first)."""
        return tuple(c for c in (self.reader_catalog, self.catalog) if c is not None)
