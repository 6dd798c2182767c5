"""The home's Dagster storage on SQLite, initialised by one process at a time.

Dagster's own SQLite storage creates `runs.db`, `schedules.db` and the event log's
`index.db` on first open without any lock across processes: two processes opening a fresh
home at once (the webserver and the daemon, or a run and `civicflow status`) both create the
tables, one stamps alembic's head and the other — seeing the tables but no version yet — an
older revision, so the file ends with two rows in `alembic_version` and every later open fails
with "Version table 'alembic_version' has more than one head present" (reproduced with four
processes on a fresh home; tests/test_dagster_instance.py). This subclass holds an exclusive
`flock` on `<base_dir>/.init.lock` while those files are created or checked, so the second
process waits and then finds them stamped. Once open, reads and writes need no lock (SQLite's
own). The home's dagster.yaml names it (`storage: custom:`, pipelines/home.py), so plain
`dagster` commands get it too.

Its event log (`BatchingSqliteEventLogStorage`) is Dagster's, made cheaper per event: a run
over a range of days records one materialization per asset per day (28 dbt models × 120 days
on the demo's first night), and Dagster's SQLite event log creates a new engine for every
event and commits each to the run's file and to the index, waiting for the disk each time —
about 20 ms an event, more than dbt's own work. Here an engine per file is kept, commits do not
wait for the disk (WAL, synchronous=NORMAL), and a batch — a step's per-partition
materializations, a run's planned events, which Dagster hands over as one when
`DAGSTER_EVENT_BATCH_SIZE` is set (`EVENT_BATCHING`, set around runs by pipelines/nightly.py) —
is written in one transaction per file. Measured by `bench/bench_event_log.py --storage home`.
"""

import fcntl
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory

LOCK_NAME = ".init.lock"

# Dagster's switch for handing a step's asset events to the storage as batches (read from the
# environment only); the batch is at most this many events.
EVENT_BATCHING = {"DAGSTER_EVENT_BATCH_SIZE": "1000"}


def _synchronous_normal(dbapi_connection, _record) -> None:
    # WAL with synchronous=NORMAL: a commit no longer waits for the disk; the file stays
    # consistent after a crash of any process, and only a power cut can lose the last events.
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


# Files of the event log a process keeps a connection to: the index and the few runs being
# written or read; the least recently used is closed first.
OPEN_FILES = 8


class BatchingSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log, writing a batch in one transaction per file.

    Each event is still stored by Dagster's own `store_event`; during a batch, every connection
    it asks for is the batch's open one (of the run's file, and of the index), so the batch
    commits once per file, or not at all (Dagster then stores its events one by one)."""

    def __init__(self, base_dir: str, inst_data=None):
        self._engines: dict[str, sa.engine.Engine] = {}
        self._open: dict[str, sa.engine.Connection] = {}
        self._tables: set[str] = set()
        self._engines_lock = threading.Lock()  # the engines dict only; never held around other locks
        super().__init__(base_dir, inst_data=inst_data)
        self._db_lock = threading.RLock()  # a batch holds both files' connections at once

    def _engine(self, shard: str) -> sa.engine.Engine:
        with self._engines_lock:
            engine = self._engines.pop(shard, None)
            if engine is None:
                # A pooled connection stays open between events: closing the last connection to a
                # WAL file checkpoints it (and waits for the disk), on every event with NullPool.
                engine = sa.create_engine(self.conn_string_for_shard(shard), poolclass=sa.pool.QueuePool, pool_size=1,
                                          connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False})
                sa.event.listen(engine, "connect", _synchronous_normal)
            self._engines[shard] = engine  # the most recent last
            while len(self._engines) > OPEN_FILES:  # the webserver reads runs by the thousand
                self._engines.pop(next(iter(self._engines))).dispose()
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[sa.engine.Connection]:
        """Dagster's own, with one engine and open connection per file kept for the process (not
        one per event), and the batch's connection while a batch is being written."""
        with self._db_lock:
            if shard in self._open:
                yield self._open[shard]
                return
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        """Dagster asks before writing every event's tags, on a new engine each time; a table,
        once there, stays (migrations add them)."""
        if table_name not in self._tables:
            engine = self._engine(INDEX_SHARD_NAME)
            with engine.connect() as conn:
                if engine.dialect.has_table(conn, table_name):
                    self._tables.add(table_name)
        return table_name in self._tables

    def _close_engines(self) -> None:
        with self._db_lock, self._engines_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()

    def wipe(self) -> None:
        self._close_engines()  # it deletes the run files: no connection may keep one open
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._close_engines()

    @contextmanager
    def _holding(self, shard: str) -> Iterator[None]:
        with self._connect(shard) as conn:
            self._open[shard] = conn
            try:
                yield
            finally:
                del self._open[shard]

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        run_ids = {e.run_id for e in events}
        if len(run_ids) != 1:
            super().store_event_batch(events)
            return
        with self._db_lock, self._holding(run_ids.pop()), self._holding(INDEX_SHARD_NAME):
            for event in events:
                self.store_event(event)


class SerialInitSqliteStorage(DagsterSqliteStorage):
    def __init__(self, base_dir: str, inst_data=None):
        Path(base_dir).mkdir(parents=True, exist_ok=True)
        with (Path(base_dir) / LOCK_NAME).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            super().__init__(base_dir, inst_data=inst_data)
            self._event_log_storage = BatchingSqliteEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        # DagsterSqliteStorage's names its own class: a subclass must build itself.
        return cls.from_local(inst_data=inst_data, **config_value)
