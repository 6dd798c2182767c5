"""Shared fixtures: a fresh CIVICFLOW_HOME per test, quiet third-party logs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
logging.getLogger("cmdstanpy").setLevel(logging.WARNING)


@pytest.fixture
def home_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty runtime home; nothing a test runs writes outside it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("CIVICFLOW_HOME", str(home))
    # prepare_home() points these at the home; restore them after the test.
    for var in ("DAGSTER_HOME", "CIVICFLOW_WAREHOUSE", "CIVICFLOW_DAGSTER_STORAGE"):
        monkeypatch.setenv(var, os.environ.get(var, ""))
    return home
