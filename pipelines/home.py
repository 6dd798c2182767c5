"""CIVICFLOW_HOME: the one folder every run writes to (DESIGN.md "Layout").

landing/, warehouse.duckdb, published/, exports/, governance.duckdb, dagster/ (DAGSTER_HOME),
logs/, dbt/ (dbt's per-run target folders), overrides/ (changed plans operations send back); with the warehouse on DuckLake, lake/ (its Parquet
files, unless CIVICFLOW_WAREHOUSE_DATA points elsewhere) and duckdb_extensions/ (links to the
wheels' extension binaries, for dbt). Nothing is written outside it, so a test gets a fresh
home in tmp_path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
RULES_DIR = PROJECT_ROOT / "governance_rules"
DAGSTER_YAML = PROJECT_ROOT / "dagster.yaml"
DAGSTER_POSTGRES_YAML = PROJECT_ROOT / "dagster.postgres.yaml"
PG_URL_ENV = "CIVICFLOW_DAGSTER_PG_URL"
WRITTEN_BY = "# Written by civicflow (pipelines/home.py)"  # first line of a home's dagster.yaml


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
    def overrides(self) -> Path:
        """Where operations drop changed plans (CSV or workbook); the overrides sensor applies them."""
        return self.root / "overrides"

    @property
    def governance_db(self) -> Path:
        return self.root / "governance.duckdb"

    @property
    def alerts_file(self) -> Path:
        """The alerts configuration (notifier URLs, thresholds, deadlines), unless CIVICFLOW_ALERTS_FILE names another."""
        return self.root / "alerts.toml"

    @property
    def alerts_state(self) -> Path:
        """The alerts sent and still open (pipelines/alerts/dedupe.py)."""
        return self.root / "alerts-state.json"

    @property
    def dagster(self) -> Path:
        return self.root / "dagster"

    @property
    def dagster_storage(self) -> Path:
        return self.dagster / "storage"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def dbt(self) -> Path:
        return self.root / "dbt"

    def dbt_run(self, run_id: str) -> Path:
        """One run's dbt target folder and log (pipelines/dbt_assets.py dbt_run_dir)."""
        return self.dbt / run_id[:8]

    @property
    def spill(self) -> Path:
        """DuckDB's spill folder of the warehouse file (its default temp_directory, `<file>.tmp`)."""
        return self.warehouse.with_name(self.warehouse.name + ".tmp")

    @property
    def ground_truth(self) -> Path:
        return self.root / "ground_truth"


def instance_yaml(home: Home, pg_url: str | None) -> str:
    """The Dagster instance config of a home: dagster.yaml with this home's storage written in
    (so plain `dagster` commands work with only DAGSTER_HOME set), or, with a PostgreSQL URL,
    dagster.postgres.yaml's storage laid over it (the URL stays in the environment)."""
    import yaml  # a dependency of dagster

    config = yaml.safe_load(DAGSTER_YAML.read_text())
    storage = str(home.dagster_storage)
    # Dagster's SQLite storage, created under a lock across processes (pipelines/instance_storage.py).
    config["storage"] = {"custom": {"module": "pipelines.instance_storage", "class": "SerialInitSqliteStorage", "config": {"base_dir": storage}}}
    config["local_artifact_storage"]["config"]["base_dir"] = storage
    if pg_url:
        if pg_url.split("://", 1)[0] in ("postgres", "postgresql"):  # SQLAlchemy 2.1 would pick psycopg 3, not installed
            raise ValueError(f"{PG_URL_ENV} must name its driver: postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB")
        config |= yaml.safe_load(DAGSTER_POSTGRES_YAML.read_text())
    return f"{WRITTEN_BY} for {home.root}: dagster.yaml + this home's storage.\n" + yaml.safe_dump(
        config, sort_keys=False
    )


def prepare_home(home: Home, pg_url: str | None = None) -> Home:
    """Create the home's folders and its Dagster instance file (rewritten only when it changed)."""
    for d in (home.landing, home.published, home.exports, home.overrides, home.dagster, home.logs):
        d.mkdir(parents=True, exist_ok=True)
    config, target = instance_yaml(home, pg_url), home.dagster / "dagster.yaml"
    if not target.exists() or target.read_text() != config:
        tmp = target.with_name(".dagster.yaml.tmp")
        tmp.write_text(config)
        tmp.replace(target)
    return home
