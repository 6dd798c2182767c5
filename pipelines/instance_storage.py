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

Its event log also writes a batch of asset events in one transaction per database. A run over
a range of days records one materialization per asset per day (28 dbt models × 120 days on the
demo's first night); Dagster's SQLite event log writes each on its own, opening a new engine and
committing twice per event (the run's file and the index), about 20 ms each — more than dbt's
own work. Dagster hands a step's per-partition materializations over as one batch when
`DAGSTER_EVENT_BATCH_SIZE` is set (`EVENT_BATCHING`, set around ranged runs by
pipelines/nightly.py), and leaves writing the batch to the storage; the SQLite one only loops.
"""

import fcntl
from collections.abc import Sequence
from pathlib import Path

from dagster._core.events import ASSET_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlalchemy_compat import db_result
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory

LOCK_NAME = ".init.lock"

# Dagster's switch for handing a step's asset events to the storage as batches (read from the
# environment only); the batch is at most this many events.
EVENT_BATCHING = {"DAGSTER_EVENT_BATCH_SIZE": "1000"}


class BatchingSqliteEventLogStorage(SqliteEventLogStorage):
    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """The same rows `store_event` writes for each event, in one transaction per database.

        Only a batch of asset events of one run (what Dagster batches); anything else is stored
        event by event, as Dagster's own storage does."""
        run_ids = {e.run_id for e in events}
        if len(run_ids) != 1 or not all(e.is_dagster_event and e.dagster_event_type in ASSET_EVENTS for e in events):
            super().store_event_batch(events)
            return
        inserts = [self.prepare_insert_event(e) for e in events]
        with self.run_connection(run_ids.pop()) as conn:
            for insert in inserts:
                conn.execute(insert)
        with self.index_transaction() as conn:
            ids = []
            for insert in inserts:
                with db_result(conn, insert) as result:
                    ids.append(result.inserted_primary_key[0])
            self._store_asset_event_tags(conn, list(events), ids)
            for event, event_id in zip(events, ids, strict=True):
                self._store_asset_event(conn, event, event_id)


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
