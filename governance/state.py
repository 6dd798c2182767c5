"""governance.duckdb: keys (hashes only), the budget ledger and the audit chain.

DuckDB lets one process hold the file read-write; a second process (e.g. `civicflow keys
revoke` while `civicflow serve` runs) waits a bounded time and then gets a clear error, which is
why the admin commands go through the running server (governance.admin) when there is one.

Inside the holding process every GovernanceState on the same file shares one lock and one set
of caches, as DuckDB shares one database instance per file within a process. Because that
process is the only writer, what is read on every request (the ledger's spend, the audit
chain's head) is loaded once and then kept in step by the functions that write it; a rolled
back transaction drops the caches so they are reloaded from the file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

DDL = """
CREATE TABLE IF NOT EXISTS keys (
    key_id VARCHAR PRIMARY KEY, key_hash VARCHAR NOT NULL UNIQUE, team VARCHAR NOT NULL, name VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL, revoked_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS key_scram (
    key_id VARCHAR PRIMARY KEY, salt BLOB NOT NULL, stored_key BLOB NOT NULL, server_key BLOB NOT NULL, iterations INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
    entry_id VARCHAR PRIMARY KEY, team VARCHAR NOT NULL, key_name VARCHAR, day DATE NOT NULL, month DATE NOT NULL,
    estimate DOUBLE NOT NULL, actual DOUBLE, status VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL, settled_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY, audit_id VARCHAR NOT NULL UNIQUE, ts TIMESTAMP NOT NULL, key_name VARCHAR, team VARCHAR,
    sql VARCHAR, tables VARCHAR, columns VARCHAR, rule VARCHAR, outcome VARCHAR NOT NULL, message VARCHAR,
    estimate DOUBLE, actual DOUBLE, duration_ms DOUBLE, result_rows BIGINT, snapshot VARCHAR,
    prev_hash VARCHAR NOT NULL, hash VARCHAR NOT NULL
);
ALTER TABLE audit ADD COLUMN IF NOT EXISTS ledger_entry VARCHAR;
"""


class StateBusy(RuntimeError):
    pass


@dataclass
class _Shared:
    """What every GovernanceState of one file in this process shares."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    cache: dict[str, Any] = field(default_factory=dict)  # reloadable from the file (ledger, audit)
    in_flight: dict[str, Any] = field(default_factory=dict)  # reservations of running queries: memory only
    users: int = 0


_SHARED: dict[Path, _Shared] = {}
_SHARED_LOCK = threading.Lock()


class GovernanceState:
    def __init__(self, path: Path, wait_seconds: float = 5.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                self.con = duckdb.connect(str(self.path))
                break
            except duckdb.IOException:
                if time.monotonic() >= deadline:
                    raise StateBusy(
                        f"{self.path} is held by another process (a running `civicflow serve`?); stop it or retry"
                    ) from None
                time.sleep(0.1)
        self._key = self.path.resolve()
        with _SHARED_LOCK:
            self._shared = _SHARED.setdefault(self._key, _Shared())
            self._shared.users += 1
        self.lock = self._shared.lock
        self.cache = self._shared.cache
        self.in_flight = self._shared.in_flight
        self._depth = 0
        self._after_commit: list = []
        self._closed = False
        with self.lock:
            self.con.execute(DDL)

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One DuckDB transaction under the lock (one commit, so one disk sync, for all the
        writes inside). Nested calls join the outer transaction."""
        with self.lock:
            if self._depth:
                yield self.con
                return
            self._depth = 1
            self._after_commit = []
            self.con.execute("BEGIN TRANSACTION")
            try:
                yield self.con
                self.con.execute("COMMIT")
                for fn in self._after_commit:
                    fn()
            except BaseException:
                try:
                    self.con.execute("ROLLBACK")
                except duckdb.Error:  # a failed COMMIT has already ended the transaction
                    pass
                self.cache.clear()  # memory follows the file again from the next read
                raise
            finally:
                self._depth = 0
                self._after_commit = []

    def on_commit(self, fn) -> None:
        """Run `fn` once what was written so far is committed: at the end of the open
        transaction, or now outside one (autocommit). A rolled back transaction drops it."""
        with self.lock:
            if self._depth:
                self._after_commit.append(fn)
            else:
                fn()

    def close(self) -> None:
        """Idempotent: the shared caches outlive this object while another one uses the file."""
        if self._closed:
            return
        self._closed = True
        with self.lock:
            self.con.close()
        with _SHARED_LOCK:
            self._shared.users -= 1
            if self._shared.users == 0 and _SHARED.get(self._key) is self._shared:
                del _SHARED[self._key]

    def __enter__(self) -> "GovernanceState":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
