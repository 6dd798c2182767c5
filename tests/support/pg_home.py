"""A home whose Dagster instance is on PostgreSQL, holding a simulated tiny city: what the
PostgreSQL-instance tests (test_dagster_postgres.py, test_dagster_deployment.py) start from."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ingest.simulator import simulate
from pipelines.home import PG_URL_ENV, prepare_home
from pipelines.settings import Settings


@contextmanager
def tiny_home_on_postgres(root: Path, pg_url: str, seed: int) -> Iterator[Settings]:
    """Five simulated days of the tiny city in `root/home`, its instance in the database at
    `pg_url`; the variables are restored on exit."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIVICFLOW_HOME", str(root / "home"))
        # dagster-postgres goes through SQLAlchemy: name the driver it installs.
        mp.setenv(PG_URL_ENV, pg_url.replace("postgresql://", "postgresql+psycopg2://", 1))
        settings = Settings.from_env()
        prepare_home(settings.home, settings.dagster_pg_url)
        simulate(settings.home.landing, size="tiny", days=5, seed=seed)
        yield settings
