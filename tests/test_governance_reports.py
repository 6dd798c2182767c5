"""For the data team: spend per key and per day (`civicflow budget --by key|day`) and one
audit row (`civicflow governance audit show AUDIT_ID`), read from a real governance.duckdb
written by real gateway requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from support.governance_env import Env, env  # noqa: F401 (env is a fixture)
from typer.testing import CliRunner

from governance import ledger
from governance.gateway import Gateway
from governance.keys import create_key
from governance.rules import load_rules
from governance.state import GovernanceState

SQL = "SELECT category, sum(units) FROM marts.demand GROUP BY 1"


@pytest.fixture
def history(env: Env) -> dict:
    """Queries of three keys today, one refusal, and settled spend 10 and 40 days ago."""
    state = GovernanceState(env.governance_db)
    rules = load_rules(env.rules_dir)
    keys = {name: create_key(state, team, name)[0] for name, team in (("ana", "analysts"), ("bo", "analysts"), ("cy", "cleared"))}
    gateway = Gateway(state, rules, env.published, env.manifest)
    done = [gateway.query(keys[k], SQL) for k in ("ana", "ana", "bo", "cy")]
    refused = gateway.query(keys["bo"], "SELECT holder_email FROM marts.passes")
    assert all(r.outcome == "ok" for r in done) and refused.rule == "identity_column"
    now = datetime.now(UTC).replace(tzinfo=None)
    for days_ago, amount in ((10, 0.4), (40, 7.0)):
        with state.transaction():
            ledger.settle(state, ledger.reserve(state, rules["analysts"], "ana", 0.5, now=now - timedelta(days=days_ago)), amount)
    gateway.close()
    state.close()
    return {"cost": done[0].actual, "refused": refused.audit_id, "ok": done[2].audit_id, "today": now.date()}


def _run(*args: str):
    from pipelines.cli import app

    return CliRunner().invoke(app, list(args), terminal_width=200)


def test_budget_by_key_sums_each_keys_settled_queries(env: Env, history: dict) -> None:
    out = _run("budget", "--by", "key", "--home", str(env.home))
    assert out.exit_code == 0, out.output
    lines = {line.split("│")[2].strip(): [c.strip() for c in line.split("│")[1:-1]] for line in out.output.splitlines() if line.count("│") > 5}
    c = history["cost"]
    month_extra = 0.4 if (history["today"] - timedelta(days=10)).month == history["today"].month else 0.0
    assert lines["ana"] == ["analysts", "ana", f"{2 * c:.3f}", "2", f"{2 * c + month_extra:.3f}", str(2 + (month_extra > 0))]
    assert lines["bo"] == ["analysts", "bo", f"{c:.3f}", "1", f"{c:.3f}", "1"]  # its refusal cost nothing
    assert lines["cy"][:4] == ["cleared", "cy", f"{c:.3f}", "1"]


def test_budget_by_day_lists_thirty_days_with_gaps_as_zero(env: Env, history: dict) -> None:
    out = _run("budget", "--by", "day", "--home", str(env.home))
    assert out.exit_code == 0, out.output
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.split("│")[1:-1]] for line in out.output.splitlines() if line.count("│") == 5)}
    today, c = history["today"], history["cost"]
    assert len(rows) == 30 and min(rows) == (today - timedelta(days=29)).isoformat()
    assert rows[today.isoformat()] == [f"{3 * c:.3f}", f"{c:.3f}", f"{4 * c:.3f}"]  # analysts, cleared, total
    assert rows[(today - timedelta(days=10)).isoformat()] == ["0.400", "0.000", "0.400"]
    assert rows[(today - timedelta(days=1)).isoformat()] == ["0.000", "0.000", "0.000"]
    assert (today - timedelta(days=40)).isoformat() not in rows  # outside the window
    seven = _run("budget", "--by", "day", "--days", "7", "--home", str(env.home))
    assert seven.exit_code == 0 and (today - timedelta(days=10)).isoformat() not in seven.output
    bad = _run("budget", "--by", "week", "--home", str(env.home))
    assert bad.exit_code == 1 and "--by must be team, key or day" in bad.output and "Traceback" not in bad.output


def test_audit_show_prints_the_row_an_analyst_quotes(env: Env, history: dict) -> None:
    out = _run("governance", "audit", "show", history["refused"], "--home", str(env.home))
    assert out.exit_code == 0, out.output
    fields = {cells[0]: cells[1] for cells in ([c.strip() for c in line.split("│")[1:-1]] for line in out.output.splitlines() if line.count("│") == 3)}
    assert fields["audit_id"] == history["refused"] and fields["rule"] == "identity_column" and fields["outcome"] == "refused"
    assert fields["team"] == "analysts" and fields["key_name"] == "bo" and "holder_email" in fields["sql"]
    assert fields["snapshot"].startswith("warehouse-")
    ok = _run("governance", "audit", "show", history["ok"], "--home", str(env.home))
    assert "result_rows" in ok.output and "ok" in ok.output
    missing = _run("governance", "audit", "show", "0000deadbeef0000", "--home", str(env.home))
    assert missing.exit_code == 1 and "no audit row with id '0000deadbeef0000'" in missing.output and "Traceback" not in missing.output
    for cmd in (["governance", "audit", "show", "--help"], ["budget", "--help"]):
        assert _run(*cmd).exit_code == 0
