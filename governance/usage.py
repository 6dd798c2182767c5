"""The daily usage report: per team, queries, refusals, cost and budget left — data in, frame out."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from governance.admin import ask_server
from governance.rules import TeamRules

if TYPE_CHECKING:  # polars is imported by the report only: `civicflow status` counts usage without it
    import polars as pl

SCHEMA = {"day": "Date", "team": "Utf8", "queries": "Int64", "refused": "Int64", "failed": "Int64",
          "cost": "Float64", "budget_per_day": "Float64", "budget_left": "Float64"}


def usage_counts(con: duckdb.DuckDBPyConnection, day: date) -> dict[str, dict]:
    """team → queries (ran: ok or failed), refused, failed, cost (settled units) on `day`."""
    rows: dict[str, dict] = {}
    for team, queries, refused, failed in con.execute(
        """
        SELECT team, count(*) FILTER (WHERE outcome IN ('ok', 'failed')), count(*) FILTER (WHERE outcome = 'refused'),
               count(*) FILTER (WHERE outcome = 'failed')
        FROM audit WHERE team IS NOT NULL AND CAST(ts AS DATE) = ? GROUP BY team
        """,
        [day],
    ).fetchall():
        rows.setdefault(team, {"cost": 0.0}).update(queries=queries, refused=refused, failed=failed)
    for team, cost in con.execute(
        "SELECT team, coalesce(sum(actual), 0) FROM ledger WHERE status = 'settled' AND day = ? GROUP BY team", [day]
    ).fetchall():
        rows.setdefault(team, {"queries": 0, "refused": 0, "failed": 0})["cost"] = float(cost)
    return rows


def audit_head(governance_db: Path) -> dict:
    """The audit chain's head (seq, hash) now, to be written beside the day's export: a copy of
    the head outside the database that `verify-audit` checks (governance.audit)."""
    answer = ask_server(governance_db, "audit/head", {})
    if answer is not None:
        return answer
    if not Path(governance_db).exists():
        return {"seq": 0, "hash": "0" * 64}
    con = duckdb.connect(str(governance_db), read_only=True)
    try:
        row = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        con.close()
    return {"seq": row[0], "hash": row[1]} if row else {"seq": 0, "hash": "0" * 64}


def usage_report(governance_db: Path, day: date, rules: dict[str, TeamRules] | None = None) -> pl.DataFrame:
    """One row per team (every team with rules, plus any team seen in the audit that day).

    queries = requests that ran (ok or failed), refused = refused before running,
    cost = settled cost units that day; budget_left = per-day budget − cost (null without rules).
    While `civicflow serve` holds governance.duckdb the counts come from it (governance.admin).
    """
    rules = rules or {}
    rows: dict[str, dict] = {t: {"queries": 0, "refused": 0, "failed": 0, "cost": 0.0} for t in rules}
    answer = ask_server(governance_db, "usage", {"day": day.isoformat()})
    if answer is not None:
        counts = answer["teams"]
    elif Path(governance_db).exists():
        con = duckdb.connect(str(governance_db), read_only=True)
        try:
            counts = usage_counts(con, day)
        finally:
            con.close()
    else:
        counts = {}
    for team, c in counts.items():
        rows[team] = rows.get(team, {}) | c
    out = []
    for team in sorted(rows):
        r = {"queries": 0, "refused": 0, "failed": 0, "cost": 0.0} | rows[team]
        budget = rules[team].budget_per_day if team in rules else None
        out.append({"day": day, "team": team, **r, "budget_per_day": budget, "budget_left": None if budget is None else max(0.0, budget - r["cost"])})
    import polars as pl

    return pl.DataFrame(out, schema={name: getattr(pl, dtype) for name, dtype in SCHEMA.items()})
