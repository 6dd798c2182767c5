"""A home whose Dagster instance is on PostgreSQL, holding a simulated tiny city: what the
PostgreSQL-instance tests (test_dagster_postgres.py, test_dagster_deployment.py) start from."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from ingest.simulator import simulate
from pipelines.home import PG_URL_ENV, Home, home_from_env, prepare_home


@contextmanager
def tiny_home_on_postgres(root: Path, pg_url: str, seed: int) -> Iterator[Home]:
    """Five simulated days of the tiny city in `root/home`, its instance in the database at
    `pg_url`; the environment prepare_home() changes is restored on exit."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIVICFLOW_HOME", str(root / "home"))
        # dagster-postgres goes through SQLAlchemy: name the driver it installs.
        mp.setenv(PG_URL_ENV, pg_url.replace("postgresql://", "postgresql+psycopg2://", 1))
        for var in ("DAGSTER_HOME", "CIVICFLOW_WAREHOUSE", "CIVICFLOW_DAGSTER_STORAGE"):
            mp.setenv(var, os.environ.get(var, ""))  # prepare_home() sets them; restored after
        home = prepare_home(home_from_env())
        simulate(home.landing, size="tiny", days=5, seed=seed)
        yield home
