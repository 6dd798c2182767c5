"""CIVICFLOW_HOME: the one folder every run writes to (DESIGN.md "Layout").

landing/, warehouse.duckdb, published/, exports/, governance.duckdb, dagster/ (DAGSTER_HOME).
Nothing is written outside it, so a test gets a fresh home in tmp_path.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
DAGSTER_YAML = PROJECT_ROOT / "dagster.yaml"


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def published(self) -> Path:
        return self.root / "published"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def governance_db(self) -> Path:
        return self.root / "governance.duckdb"

    @property
    def dagster(self) -> Path:
        return self.root / "dagster"

    @property
    def ground_truth(self) -> Path:
        return self.root / "ground_truth"


def home_from_env() -> Home:
    return Home(Path(os.environ.get("CIVICFLOW_HOME", "./.civicflow")).expanduser().resolve())


def prepare_home(home: Home) -> Home:
    """Create the folders and point Dagster and dbt at this home (env vars their configs read)."""
    for d in (home.landing, home.published, home.exports, home.dagster):
        d.mkdir(parents=True, exist_ok=True)
    instance_yaml = home.dagster / "dagster.yaml"
    if not instance_yaml.exists() or instance_yaml.read_bytes() != DAGSTER_YAML.read_bytes():
        shutil.copyfile(DAGSTER_YAML, instance_yaml)
    os.environ["CIVICFLOW_HOME"] = str(home.root)
    os.environ["DAGSTER_HOME"] = str(home.dagster)
    os.environ["CIVICFLOW_DAGSTER_STORAGE"] = str(home.dagster / "storage")
    os.environ["CIVICFLOW_WAREHOUSE"] = str(home.warehouse)
    return home
