"""A read-only, locked-down DuckDB on one published snapshot, with a pool of connections.

The database is opened read-only with external access off (no files, no network, no
ATTACH/INSTALL/LOAD of anything outside), extension autoloading off, threads and memory
limited and spilling disabled. Each pooled connection gets the profiler switched on (its
output is how a query's cost is settled), then the configuration is locked: no statement can
change a setting afterwards. A query's timeout interrupts its connection from the watchdog
thread (governance.watchdog).

Each team has connections of its own, as many as its `concurrency` rule: a team that holds all
of its connections (planning or running) is refused, and never takes one from another team
(per-team isolation; the shared pool serves only the gateway's own catalog reads).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from governance.catalog import Catalog
from governance.plan import explain as explain_json
from governance.plan import qualify_lake_scans
from warehouse.catalog_url import CatalogUrl
from warehouse.lake import use_lake
from warehouse.snapshots import open_snapshot

# Kept on at plan and run time alike: constant folding against column statistics could drop a
# filter on a denied column before the plan shows it.
DISABLED_OPTIMIZERS = "statistics_propagation"


class QueryTimeout(Exception):
    pass


@dataclass(frozen=True)
class SandboxLimits:
    threads: int = 2
    memory_limit: str = "512MB"
    pool_size: int = 8


BATCH_ROWS = 10_000  # rows per record batch read from DuckDB


class Sandbox:
    def __init__(self, snapshot: Path, limits: SandboxLimits = SandboxLimits(), credentials: Sequence[CatalogUrl] = (),
                 slots: Mapping[str, int] | None = None):
        self.snapshot = Path(snapshot)
        self.limits = limits
        # A DuckDB file, or the DuckLake attached read-only at the published version
        # (warehouse.snapshots.open_snapshot: external access goes off right after the attach).
        self._db = open_snapshot(
            self.snapshot,
            credentials,
            config={
                "enable_external_access": False,
                "autoload_known_extensions": False,
                "autoinstall_known_extensions": False,
                "allow_community_extensions": False,
                "threads": limits.threads,
                "memory_limit": limits.memory_limit,
                "temp_directory": "",
            },
        ).con
        self.catalog = Catalog(self._db)
        self._pool: queue.Queue[duckdb.DuckDBPyConnection] = queue.Queue()
        for _ in range(limits.pool_size):
            self._pool.put(self._cursor())
        # Created before the configuration is locked: profiling is a per-connection setting.
        self._team_pools: dict[str, queue.Queue[duckdb.DuckDBPyConnection]] = {}
        for team, n in (slots or {}).items():
            pool = self._team_pools[team] = queue.Queue()
            for _ in range(n):
                pool.put(self._cursor())
        self._db.execute(f"SET disabled_optimizers = '{DISABLED_OPTIMIZERS}'")
        self._db.execute("SET lock_configuration = true")
        self._users = 0
        self._users_lock = threading.Lock()
        self.retired = False

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = use_lake(self._db.cursor())  # `USE lake` is per connection
        cur.execute("SET enable_profiling = 'no_output'")
        cur.execute("SET profiling_mode = 'standard'")
        return cur

    def take(self, team: str) -> duckdb.DuckDBPyConnection | None:
        """One of the team's own connections, or None when all are in use (no waiting)."""
        try:
            return self._team_pools[team].get_nowait()
        except (KeyError, queue.Empty):
            return None

    def give(self, team: str, cur: duckdb.DuckDBPyConnection) -> None:
        self._team_pools[team].put(cur)

    @contextmanager
    def connection(self, wait_seconds: float = 30.0) -> Iterator[duckdb.DuckDBPyConnection]:
        cur = self._pool.get(timeout=wait_seconds)
        try:
            yield cur
        finally:
            self._pool.put(cur)

    def acquire(self) -> None:
        with self._users_lock:
            self._users += 1

    def release(self) -> bool:
        """Returns True when this sandbox is retired and nobody uses it any more (close it)."""
        with self._users_lock:
            self._users -= 1
            return self.retired and self._users == 0

    def explain(self, cur: duckdb.DuckDBPyConnection, sql: str) -> str:
        return explain_json(cur, sql)  # DuckLake scans schema-qualified (governance.plan.explain)

    def start(self, cur: duckdb.DuckDBPyConnection, sql: str, stopped: threading.Event) -> pa.RecordBatchReader:
        """Start `sql`; its result is read a record batch at a time (governance.stream), never
        built whole. `stopped` is set by the request's deadline (which interrupts `cur`)."""
        try:
            return cur.execute(sql).to_arrow_reader(BATCH_ROWS)
        except duckdb.InterruptException:
            raise QueryTimeout() from None
        except duckdb.Error:
            if stopped.is_set():
                raise QueryTimeout() from None
            raise

    def profile(self, cur: duckdb.DuckDBPyConnection, sql: str) -> str:
        """The finished query's profile (what its cost is settled from); DuckDB profiles only
        queries it ran to their end."""
        return qualify_lake_scans(cur, sql, cur.get_profiling_information(format="json"))

    def close(self) -> None:
        for pool in (self._pool, *self._team_pools.values()):
            while not pool.empty():
                pool.get_nowait().close()
        self._db.close()


def profile_tree(profile_json: str) -> dict:
    return json.loads(profile_json)
