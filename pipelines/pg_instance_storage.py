"""The Dagster storage on PostgreSQL, created by one process at a time.

Dagster's PostgreSQL storage creates its tables on first open with no lock across processes,
like its SQLite one (pipelines/instance_storage.py): a daemon and a `dagster job launch` (or a
webserver) opening a fresh database at once both run `CREATE TABLE`, and the slower one fails
with `type "instigators" already exists` (seen at load average 4: the daemon died and the
queued runs waited forever). This subclass holds a PostgreSQL advisory lock while the three
storages open, so the second process waits and then finds the tables there.
dagster.postgres.yaml names it.
"""

import sqlalchemy as sa
from dagster_postgres.storage import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

# Any fixed key: every civicflow process that opens the instance takes the same one.
INIT_LOCK_KEY = 0x63697669  # "civi"


class SerialInitPostgresStorage(DagsterPostgresStorage):
    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None, token_provider=None):
        engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": INIT_LOCK_KEY})
                try:
                    super().__init__(postgres_url, should_autocreate_tables, inst_data=inst_data, token_provider=token_provider)
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": INIT_LOCK_KEY})
        finally:
            engine.dispose()

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        # DagsterPostgresStorage's names its own class: a subclass must build itself.
        return cls(
            pg_url_from_config(config_value),
            config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
            token_provider=get_token_provider_from_config(config_value),
        )
