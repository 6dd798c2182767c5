"""Per-team publication (governance.publication): the cells' merging, and publishing with it."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import duckdb
import pytest
from support.governance_env import make_env, publish, team_publisher

from governance.publication import PublicationError, merge_cells, published_counts
from warehouse.backends import DuckDBFile
from warehouse.snapshots import current_snapshot, team_snapshot, teams_dir


def _check_tree(cells: dict, k: int) -> None:
    mapping = merge_cells(cells, k)
    counts = published_counts(cells, mapping)
    assert all(n >= k for n in counts.values())
    width = len(next(iter(cells)))
    for level in range(width + 1):  # every level's published nodes partition their parent exactly
        by_prefix: dict = defaultdict(int)
        for key, n in counts.items():
            by_prefix[key[:level]] += n
        assert all(n >= k for n in by_prefix.values())
        assert sum(by_prefix.values()) == sum(cells.values())
    for key, pub in mapping.items():  # a published key only hides dimensions, never moves a cell
        assert all(p is None or p == v for p, v in zip(pub, key, strict=True))


@pytest.mark.parametrize("seed", range(25))
def test_merged_cells_are_all_big_enough_and_every_total_is_exact(seed: int) -> None:
    rng = random.Random(seed)
    k = rng.choice([2, 5, 10, 20])
    cells = {(rng.choice("abc"), rng.randrange(6), rng.choice(["x", "y", None])): rng.choice([1, 1, 2, 3, 8, 15, 40]) for _ in range(60)}
    _check_tree(cells, k)


def test_a_lone_small_cell_takes_its_smallest_sibling_along() -> None:
    cells = {("a", "n1"): 50, ("a", "n2"): 12, ("a", "n3"): 2, ("b", "n1"): 30}
    mapping = merge_cells(cells, 10)
    # n3 alone in the remainder would be 2 people: n2 (the smallest sibling) joins it
    assert mapping[("a", "n3")] == mapping[("a", "n2")] == ("a", None) and mapping[("a", "n1")] == ("a", "n1")
    assert published_counts(cells, mapping) == {("a", "n1"): 50, ("a", None): 14, ("b", "n1"): 30}


def test_a_population_below_the_minimum_is_not_published() -> None:
    cells = {("a",): 3, ("b",): 4}
    assert merge_cells(cells, 10) == {("a",): None, ("b",): None}


def test_publish_builds_every_teams_file_before_current_switches(tmp_path: Path) -> None:
    env = make_env(tmp_path / "env")
    first = current_snapshot(env.published)
    assert {p.name for p in teams_dir(first).iterdir()} == {"analysts.duckdb", "analysts.json", "cleared.duckdb", "cleared.json"}
    con = duckdb.connect(str(team_snapshot(first, "analysts")), read_only=True)
    try:
        tables = {r[0] for r in con.execute("SELECT schema_name || '.' || table_name FROM duckdb_tables()").fetchall()}
        assert tables == {"marts.demand", "marts.big", "marts.funnel", "marts.passes", "staging.stg_onboarding"}  # no raw, no secret
        cols = {r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 'passes'").fetchall()}
        assert cols == {"pass_type", "home_neighbourhood_id", "holders"}  # no pass_id, no identity
        assert con.execute("SELECT min(holders), sum(holders) FROM marts.passes").fetchone() == (500, 6002)
    finally:
        con.close()
    info = json.loads((teams_dir(first) / "analysts.json").read_text())
    assert info["withheld"]["marts.passes"]["birth_year"] == "identity" and "raw.onboarding" in info["not_granted"]
    # a failing build leaves CURRENT where it was and no half-built snapshot behind
    def broken(snapshot: Path) -> None:
        raise PublicationError("boom")

    with pytest.raises(PublicationError):
        DuckDBFile(env.home / "warehouse.duckdb").publish(env.published, prepare=broken)
    assert current_snapshot(env.published) == first and len(list(env.published.glob("warehouse-*.duckdb"))) == 1
    second = publish(env)
    assert current_snapshot(env.published) == second != first and teams_dir(second).is_dir()


def test_relations_counting_the_same_people_must_nest(tmp_path: Path) -> None:
    env = make_env(tmp_path / "env")
    manifest = json.loads(env.manifest.read_text())
    node = manifest["nodes"]["model.civicflow.stg_onboarding"]
    node["meta"] = node["config"]["meta"] = {"privacy_unit": "pass_id", "privacy_cells": ["birth_year"]}  # not a prefix of the others
    env.manifest.write_text(json.dumps(manifest))
    with pytest.raises(PublicationError, match="do not nest"):
        team_publisher(env)(current_snapshot(env.published))
