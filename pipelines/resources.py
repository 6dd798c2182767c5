"""The warehouse resource: the single writer's connection, opened per step and closed after.

DuckDB allows one read-write process per file (DESIGN.md "One writer"). Writers also run in
the Dagster pool `warehouse` (limit 1), so the bounded retry (warehouse.retry) only covers a
foreign process holding the file or an unreachable DuckLake catalog; past it, Dagster retries
the step with backoff.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from warehouse.backends import Backend, backend_for
from warehouse.catalog_url import CatalogUrl
from warehouse.retry import WarehouseBusy, with_retry
from warehouse.settings import CATALOG_ENV, WarehouseSettings

WRITER_POOL = "warehouse"
TRANSIENT_ERRNOS = {errno.EBUSY, errno.EAGAIN}


def open_with_retry(backend: Backend, read_only: bool = False, attempts: int = 6, first_wait_s: float = 0.5) -> duckdb.DuckDBPyConnection:
    return with_retry(lambda: backend.connect(read_only=read_only), f"opening {backend.describe()}", attempts, first_wait_s)


class WarehouseResource(dg.ConfigurableResource):
    """The live warehouse of a home (warehouse.settings decides the backend). The catalog URL is
    given as `dg.EnvVar`, so the UI shows the variable's name, never the password."""

    home: str
    catalog: str = ""
    data_path: str = ""
    memory_limit: str = "1GB"
    threads: int = 2

    @classmethod
    def from_settings(cls, s: WarehouseSettings) -> WarehouseResource:
        return cls(
            home=str(s.file.parent),
            catalog=dg.EnvVar(CATALOG_ENV) if s.catalog else "",  # the secret stays in the environment
            data_path=str(s.data_path or ""),
            memory_limit=s.memory_limit,
            threads=s.threads,
        )

    def settings(self) -> WarehouseSettings:
        catalog = CatalogUrl.parse(self.catalog) if self.catalog else None
        return WarehouseSettings(
            file=Path(self.home) / "warehouse.duckdb",
            catalog=catalog,
            data_path=(Path(self.data_path) if self.data_path else Path(self.home) / "lake") if catalog else None,
            memory_limit=self.memory_limit,
            threads=self.threads,
        )

    def backend(self) -> Backend:
        return backend_for(self.settings())

    def dbt_env(self) -> dict[str, str | None]:
        """What dbt's profile reads (dbt_project/profiles.yml) for this warehouse."""
        return self.backend().dbt_env(Path(self.home))

    @contextmanager
    def connect(self, context: dg.OpExecutionContext | None = None, memory_limit: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the live warehouse for one step (`memory_limit` overrides the resource's). With a
        step context, a transient failure (still locked after the bounded wait, a busy disk)
        asks Dagster to retry the step with exponential backoff instead of failing the run."""
        try:
            con = open_with_retry(self.backend())
        except (WarehouseBusy, OSError) as exc:
            transient = isinstance(exc, WarehouseBusy) or getattr(exc, "errno", None) in TRANSIENT_ERRNOS
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
