"""The warehouse resource: the single writer's connection, opened per step and closed after.

DuckDB allows one read-write process per file (DESIGN.md "One writer"). Writers also run in
the Dagster pool `warehouse` (limit 1), so this retry only covers a foreign process (a
person's shell, a stuck job) holding the file: a bounded wait, then an error naming the lock.

With the warehouse on DuckLake (pipelines/warehouse.py) there is no file lock: the connection
attaches the lake (PostgreSQL catalog, Parquet data path); an unreachable catalog is the
transient failure that is waited for, then retried by Dagster with backoff.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from pipelines.warehouse import Warehouse, open_warehouse, warehouse_at

WRITER_POOL = "warehouse"
TRANSIENT_ERRNOS = {errno.EBUSY, errno.EAGAIN}


class WarehouseLocked(RuntimeError):
    pass


class WarehouseUnavailable(RuntimeError):
    """The DuckLake catalog (PostgreSQL) could not be reached."""


def connect_with_retry(path: Path, read_only: bool = False, attempts: int = 6, first_wait_s: float = 0.5) -> duckdb.DuckDBPyConnection:
    wait = first_wait_s
    for attempt in range(1, attempts + 1):
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or attempt == attempts:
                if "lock" in str(exc).lower():
                    raise WarehouseLocked(
                        f"warehouse {path} is locked by another process after {attempts} attempts: {exc}"
                    ) from exc
                raise
            time.sleep(wait)
            wait = min(wait * 2, 10)
    raise AssertionError("unreachable")


def open_with_retry(wh: Warehouse, read_only: bool = False, attempts: int = 6, first_wait_s: float = 0.5) -> duckdb.DuckDBPyConnection:
    """Open the live warehouse, whichever backend: a locked file or an unreachable catalog is
    waited for (bounded), then reported as WarehouseLocked / WarehouseUnavailable."""
    if not wh.is_lake:
        return connect_with_retry(wh.path, read_only=read_only, attempts=attempts, first_wait_s=first_wait_s)
    wait = first_wait_s
    for attempt in range(1, attempts + 1):
        try:
            return open_warehouse(wh, read_only=read_only)
        except duckdb.IOException as exc:
            if "connect" not in str(exc).lower():
                raise
            if attempt == attempts:
                raise WarehouseUnavailable(f"warehouse catalog {wh.describe()} unreachable after {attempts} attempts: {exc}") from exc
            time.sleep(wait)
            wait = min(wait * 2, 10)
    raise AssertionError("unreachable")


class WarehouseResource(dg.ConfigurableResource):
    """Path of the live DuckDB warehouse (CIVICFLOW_HOME/warehouse.duckdb); on DuckLake when
    CIVICFLOW_WAREHOUSE_CATALOG is set (pipelines/warehouse.py decides, for every caller)."""

    path: str
    memory_limit: str = "1GB"  # DuckDB spills past it; keeps ingest of any file size under 2 GB RSS (bench_ingest)
    threads: int = 2

    def warehouse(self) -> Warehouse:
        return warehouse_at(self.path)

    @contextmanager
    def connect(self, context: dg.OpExecutionContext | None = None, memory_limit: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the live warehouse for one step (`memory_limit` overrides the resource's). With a
        step context, a transient failure (the file still locked after the bounded wait, a busy
        disk) asks Dagster to retry the step with exponential backoff instead of failing the run."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            con = open_with_retry(self.warehouse())
        except (WarehouseLocked, WarehouseUnavailable, OSError) as exc:
            transient = isinstance(exc, (WarehouseLocked, WarehouseUnavailable)) or getattr(exc, "errno", None) in TRANSIENT_ERRNOS
            if context is None or not transient:
                raise
            wait = 5 * 2**context.retry_number
            context.log.warning(f"transient failure opening the warehouse, retry in {wait} s: {exc}")
            raise dg.RetryRequested(max_retries=3, seconds_to_wait=wait) from exc
        try:
            con.execute(f"SET memory_limit = '{memory_limit or self.memory_limit}'")
            con.execute(f"SET threads = {int(self.threads)}")
            yield con
        finally:
            con.close()
