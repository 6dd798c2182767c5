"""CIVICFLOW_HOME: the one folder every run writes to (DESIGN.md "Layout").

landing/, warehouse.duckdb, published/, exports/, governance.duckdb, dagster/ (DAGSTER_HOME);
with the warehouse on DuckLake, lake/ (its Parquet files, unless CIVICFLOW_WAREHOUSE_DATA points
elsewhere) and duckdb_extensions/ (links to the wheels' extension binaries, for dbt).
Nothing is written outside it, so a test gets a fresh home in tmp_path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
DAGSTER_YAML = PROJECT_ROOT / "dagster.yaml"
DAGSTER_POSTGRES_YAML = PROJECT_ROOT / "dagster.postgres.yaml"
PG_URL_ENV = "CIVICFLOW_DAGSTER_PG_URL"


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


def instance_yaml() -> str:
    """The Dagster instance config for a home: dagster.yaml (SQLite under the home), or, when
    CIVICFLOW_DAGSTER_PG_URL is set, the same with dagster.postgres.yaml's storage section
    laid over it (PostgreSQL; the URL stays in the environment, never in the file)."""
    base = DAGSTER_YAML.read_text()
    url = os.environ.get(PG_URL_ENV)
    if not url:
        return base
    if url.split("://", 1)[0] in ("postgres", "postgresql"):  # SQLAlchemy 2.1 would pick psycopg 3, not installed
        raise ValueError(f"{PG_URL_ENV} must name its driver: postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB")
    import yaml  # a dependency of dagster

    config = yaml.safe_load(base) | yaml.safe_load(DAGSTER_POSTGRES_YAML.read_text())
    return "# Written by pipelines/home.py: dagster.yaml + dagster.postgres.yaml.\n" + yaml.safe_dump(config, sort_keys=False)


def prepare_home(home: Home) -> Home:
    """Create the folders and point Dagster and dbt at this home (env vars their configs read)."""
    for d in (home.landing, home.published, home.exports, home.dagster):
        d.mkdir(parents=True, exist_ok=True)
    config, target = instance_yaml(), home.dagster / "dagster.yaml"
    if not target.exists() or target.read_text() != config:
        target.write_text(config)
    os.environ["CIVICFLOW_HOME"] = str(home.root)
    os.environ["DAGSTER_HOME"] = str(home.dagster)
    os.environ["CIVICFLOW_DAGSTER_STORAGE"] = str(home.dagster / "storage")
    os.environ["CIVICFLOW_WAREHOUSE"] = str(home.warehouse)
    # The warehouse on DuckLake (CIVICFLOW_WAREHOUSE_CATALOG): dbt's `lake` target reads these.
    from pipelines.warehouse import dbt_env, warehouse_at

    for var, value in dbt_env(warehouse_at(home.warehouse), home.root).items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
    return home
