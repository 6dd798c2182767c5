"""Builders the governance tests share: a small published snapshot with public, quasi and
identity columns (a canary planted in the identity ones), its dbt-style manifest, team rules,
and a real uvicorn gateway on 127.0.0.1 with a free port."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pytest

CANARY = "CANARY-5f1e9b"
CANARY_YEAR = 1777  # birth_year of the canary holder (identity)
DATA_DATE = date(2027, 7, 10)  # the last demand_date in marts.demand: the data date the test snapshots record

MANIFEST_MODELS = {
    "marts.demand": {"neighbourhood_id": "public", "category": "public", "demand_date": "public", "units": "public"},
    "marts.passes": {"pass_id": "quasi", "home_neighbourhood_id": "quasi", "pass_type": "public", "birth_year": "identity", "holder_email": "identity"},  # note: no class → identity
    "marts.funnel": {"pass_type": "public", "home_neighbourhood_id": "quasi", "passes_issued": "public"},
    "marts.big": {"x": "public", "y": "public"},
    "staging.stg_onboarding": {"pass_id": "quasi", "pass_type": "public", "birth_year": "identity"},
}
WEIGHTS = {"marts.funnel": "passes_issued"}
# How each relation about people is published to a team (governance.publication): its cells'
# dimensions, coarsest first, and what counts the people (a weight column or a unit column).
CELLS = {
    "marts.funnel": {"privacy_group_weight": "passes_issued", "privacy_cells": ["pass_type", "home_neighbourhood_id"]},
    "marts.passes": {"privacy_unit": "pass_id", "privacy_cells": ["pass_type", "home_neighbourhood_id", "birth_year"]},
    "staging.stg_onboarding": {"privacy_unit": "pass_id", "privacy_cells": ["pass_type"]},
}
DESCRIPTIONS = {  # dbt descriptions: relation → (its description, {column: description})
    "marts.demand": ("Units demanded per neighbourhood, category and day", {"units": "units picked up that day", "demand_date": "the city's local date"}),
    "marts.passes": ("One row per pass issued", {"pass_type": "transit, event or locker"}),
}


def build_warehouse(path: Path) -> Path:
    con = duckdb.connect(str(path))
    con.execute(
        f"""
        CREATE SCHEMA marts; CREATE SCHEMA staging; CREATE SCHEMA raw; CREATE SCHEMA secret;
        CREATE TABLE marts.demand AS
            SELECT 'N' || (i % 12) AS neighbourhood_id, ['food', 'parcels', 'pharmacy'][1 + i % 3] AS category,
                   DATE '2026-01-01' + CAST(i // 36 AS INTEGER) AS demand_date, (i * 7 % 23)::DOUBLE AS units
            FROM range(20000) t(i);
        CREATE TABLE marts.passes AS
            SELECT 'P' || i AS pass_id, 'N' || (i % 12) AS home_neighbourhood_id,
                   ['transit', 'event', 'locker'][1 + i % 3] AS pass_type,
                   CASE WHEN i = 4242 THEN {CANARY_YEAR} ELSE 1940 + i % 60 END AS birth_year,
                   CASE WHEN i = 4242 THEN '{CANARY}@example.org' ELSE 'holder' || i || '@example.org' END AS holder_email,
                   CASE WHEN i = 4242 THEN '{CANARY}' ELSE 'n' END AS note
            FROM range(6000) t(i);
        -- two passes alone in their neighbourhood: a cell too small for any team
        INSERT INTO marts.passes VALUES ('P6000', 'N99', 'event', 1950, 'holder6000@example.org', 'n'),
                                        ('P6001', 'N99', 'event', 1951, 'holder6001@example.org', 'n');
        CREATE TABLE marts.funnel AS
            SELECT pass_type, home_neighbourhood_id, count(*)::BIGINT AS passes_issued FROM marts.passes GROUP BY ALL;
        CREATE TABLE marts.big AS SELECT i AS x, i % 97 AS y FROM range(300000) t(i);
        CREATE TABLE raw.onboarding AS
            SELECT pass_id, pass_type, birth_year, holder_email, true AS is_latest FROM marts.passes;
        CREATE VIEW staging.stg_onboarding AS SELECT pass_id, pass_type, birth_year FROM raw.onboarding WHERE is_latest;
        CREATE TABLE secret.salaries AS SELECT 'x' AS who, 1 AS amount;
        """
    )
    con.execute("CHECKPOINT")
    con.close()
    return path


def write_manifest(path: Path) -> Path:
    nodes = {}
    for rel, cols in MANIFEST_MODELS.items():
        schema, name = rel.split(".")
        meta = CELLS.get(rel, {})
        described, column_descriptions = DESCRIPTIONS.get(rel, ("", {}))
        nodes[f"model.civicflow.{name}"] = {
            "resource_type": "model", "schema": schema, "name": name, "alias": name, "meta": meta,
            "config": {"meta": meta}, "description": described,
            "columns": {c: {"name": c, "meta": {"privacy": cls}, "description": column_descriptions.get(c, "")} for c, cls in cols.items()},
        }
    path.write_text(json.dumps({"nodes": nodes}))
    return path


TEAM_YAML = """\
team: {team}
budget:
  per_day: {per_day}
  per_month: {per_month}
  per_query: {per_query}
limits:
  concurrency: {concurrency}
  timeout_seconds: {timeout}
  max_result_rows: 1000
allow:
  schemas: [marts]
  tables: [staging.stg_onboarding]
  table_functions: [range]
identity_clearance: {clearance}
min_group_size: 5
"""


def write_rules(rules_dir: Path, **overrides) -> Path:
    rules_dir.mkdir(parents=True, exist_ok=True)
    teams = {
        "analysts": dict(per_day=50, per_month=500, per_query=20, concurrency=4, timeout=2, clearance="false"),
        "cleared": dict(per_day=50, per_month=500, per_query=20, concurrency=4, timeout=2, clearance="true"),
    }
    for team, values in teams.items():
        values.update(overrides.get(team, {}))
        (rules_dir / f"{team}.yml").write_text(TEAM_YAML.format(team=team, **values))
    return rules_dir


@dataclass
class Env:
    home: Path
    published: Path
    rules_dir: Path
    manifest: Path
    governance_db: Path


def team_publisher(env: Env):
    """The `prepare` step publishing uses (pipelines/publish_assets.py): every team's relations."""
    from governance.publication import publish_teams
    from governance.rules import load_rules

    return lambda snapshot: publish_teams(snapshot, load_rules(env.rules_dir).values(), env.manifest, live_catalog="warehouse",
                                          data_date=DATA_DATE)


def publish(env: Env) -> Path:
    from warehouse.backends import DuckDBFile

    return DuckDBFile(env.home / "warehouse.duckdb").publish(env.published, prepare=team_publisher(env)).path


def make_env(root: Path, **rule_overrides) -> Env:
    root.mkdir(parents=True, exist_ok=True)
    build_warehouse(root / "warehouse.duckdb")
    env = Env(root, root / "published", write_rules(root / "rules", **rule_overrides), write_manifest(root / "manifest.json"), root / "governance.duckdb")
    publish(env)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn on 127.0.0.1:<free port> in a thread; waits (bounded) until it answers."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("gateway did not start")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return make_env(tmp_path / "env")
