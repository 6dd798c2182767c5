"""Shared fixtures: a fresh CIVICFLOW_HOME per test, quiet third-party logs."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

logging.getLogger("cmdstanpy").setLevel(logging.WARNING)


@pytest.fixture(scope="session", autouse=True)
def one_thread_per_fit():
    """Stan and BLAS fits in tests use one thread each (the forecast pool fans out instead)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
        yield


@pytest.fixture
def home_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty runtime home, named by CIVICFLOW_HOME; nothing a test runs writes outside it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("CIVICFLOW_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def pg_database():
    """A fresh database on the test PostgreSQL server, dropped afterwards: its libpq URL.

    The server comes from CIVICFLOW_TEST_PG_URL, a role allowed to create databases (`.ci/run`
    starts one on 127.0.0.1 with `.ci/postgres`); without it the test skips with the reason."""
    psycopg2 = pytest.importorskip("psycopg2")
    server = os.environ.get("CIVICFLOW_TEST_PG_URL")
    if not server:
        pytest.skip("CIVICFLOW_TEST_PG_URL is not set: no PostgreSQL server to test against (.ci/run starts one)")
    try:
        admin = psycopg2.connect(server, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL at CIVICFLOW_TEST_PG_URL is unreachable: {str(exc).strip()}")
    admin.autocommit = True
    name = f"civicflow_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield urlsplit(server)._replace(path=f"/{name}").geturl()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


# The loader's tests (tests/test_ingest_*.py): a landing zone holding the two-device
# reference of tests/support/landing_files.py, and the warehouse file they load into.
@pytest.fixture
def landing(tmp_path: Path) -> Path:
    from support.landing_files import DEVICES_CSV, put

    from ingest.contracts import DEVICES

    root = tmp_path / "landing"
    put(root, f"reference/{DEVICES.name}/devices.csv", DEVICES_CSV.encode())
    return root


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "warehouse.duckdb"


@pytest.fixture
def con(db: Path):
    import duckdb

    c = duckdb.connect(str(db))
    yield c
    c.close()
