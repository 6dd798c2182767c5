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
"""

import fcntl
from pathlib import Path

from dagster._core.storage.sqlite_storage import DagsterSqliteStorage

LOCK_NAME = ".init.lock"


class SerialInitSqliteStorage(DagsterSqliteStorage):
    def __init__(self, base_dir: str, inst_data=None):
        Path(base_dir).mkdir(parents=True, exist_ok=True)
        with (Path(base_dir) / LOCK_NAME).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        # DagsterSqliteStorage's names its own class: a subclass must build itself.
        return cls.from_local(inst_data=inst_data, **config_value)
