"""The daily usage report: the pure function and the Dagster asset on a real governance.duckdb."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
from support.governance_env import make_env

from governance.gateway import Gateway
from governance.keys import create_key
from governance.rules import load_rules
from governance.state import GovernanceState
from governance.usage import usage_report
from pipelines.governance_assets import build_usage_asset
from pipelines.home import Home


def test_usage_report_counts_queries_refusals_and_cost_per_team(tmp_path: Path) -> None:
    env = make_env(tmp_path / "env")
    rules = load_rules(env.rules_dir)
    state = GovernanceState(env.governance_db)
    gateway = Gateway(state, rules, env.published, env.manifest)
    key, _ = create_key(state, "analysts", "ana")
    ok = [gateway.query(key, "SELECT sum(units) FROM marts.demand") for _ in range(3)]
    gateway.query(key, "SELECT holder_email FROM marts.passes")
    gateway.query(key, "SELECT CAST(category AS INTEGER) FROM marts.demand")  # fails, free
    gateway.close()
    state.close()
    today = datetime.now(UTC).date()
    frame = usage_report(env.governance_db, today, rules)
    row = frame.filter(pl.col("team") == "analysts").row(0, named=True)
    assert (row["queries"], row["refused"], row["failed"]) == (4, 1, 1)
    assert abs(row["cost"] - sum(r.actual for r in ok)) < 1e-9 and abs(row["budget_left"] - (50 - row["cost"])) < 1e-9
    assert frame.filter(pl.col("team") == "cleared").row(0, named=True)["queries"] == 0

    home = Home(env.home)
    result = dg.materialize(
        [build_usage_asset(home)],
        run_config={"ops": {"governance__usage_report_daily": {"config": {"day": today.isoformat(), "rules_dir": str(env.rules_dir)}}}},
    )
    assert result.success
    csv = pl.read_csv(home.exports / "usage" / f"usage-{today.isoformat()}.csv")
    assert csv.filter(pl.col("team") == "analysts")["refused"].to_list() == [1]
    head = json.loads((home.exports / "usage" / f"usage-{today.isoformat()}.audit-head.json").read_text())
    con = duckdb.connect(str(env.governance_db), read_only=True)
    assert con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone() == (head["seq"], head["hash"])
    con.close()
    mat = result.asset_materializations_for_node("governance__usage_report_daily")[0]
    assert mat.metadata["queries"].value == 4
