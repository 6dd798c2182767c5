"""governance.duckdb: keys (hashes only), the budget ledger and the audit chain.

One connection per process, guarded by a lock: writes are short and the lock makes the
ledger's check-then-reserve atomic. DuckDB lets one process hold the file read-write; a
second process (e.g. `civicflow keys revoke` while `civicflow serve` runs) waits a bounded
time and then gets a clear error.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import duckdb

DDL = """
CREATE TABLE IF NOT EXISTS keys (
    key_id VARCHAR PRIMARY KEY, key_hash VARCHAR NOT NULL UNIQUE, team VARCHAR NOT NULL, name VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL, revoked_at TIMESTAMP
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
"""


class StateBusy(RuntimeError):
    pass


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
        self.lock = threading.RLock()
        with self.lock:
            self.con.execute(DDL)

    def close(self) -> None:
        with self.lock:
            self.con.close()

    def __enter__(self) -> "GovernanceState":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
