"""The query gateway on real parts: a published DuckDB snapshot, governance.duckdb, uvicorn on
127.0.0.1, the civicflow CLI. Outcomes are asserted: values, refusals with their rule, ledger
and audit rows — never just "it ran"."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import httpx
import polars as pl
import pyarrow as pa
import pytest
from support.governance_env import CANARY, Env, ServerThread, env, make_env  # noqa: F401
from typer.testing import CliRunner

from governance import audit, ledger
from governance.catalog import load_manifest
from governance.client import Client, GatewayError
from governance.gateway import Gateway
from governance.keys import create_key, list_keys, revoke_key
from governance.rules import RuleFileError, load_rule_file, load_rules
from governance.server import create_app
from governance.state import GovernanceState
from warehouse.snapshots import current_snapshot

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def gw(env: Env):
    state = GovernanceState(env.governance_db)
    gateway = Gateway(state, load_rules(env.rules_dir), env.published, env.manifest)
    yield gateway
    gateway.close()
    state.close()


def bare(env: Env, sql: str):
    con = duckdb.connect(str(current_snapshot(env.published)), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


# ---------------------------------------------------------------- rules
BAD_RULES = [
    ("unknown key", "team: t\nbudget: {per_day: 1, per_month: 2, per_query: 1}\nbudgett: 3\n", 3, "unknown key 'budgett'"),
    ("wrong type", "team: t\nbudget:\n  per_day: lots\n  per_month: 2\n  per_query: 1\n", 3, "budget.per_day must be"),
    ("bad yaml", "team: t\nbudget: {per_day: 1\n", 3, "not valid YAML"),
    ("missing budget", "team: t\n", 2, "missing required key 'budget.per_day'"),
    ("team differs from file", "team: other\nbudget: {per_day: 1, per_month: 2, per_query: 1}\n", 1, "must match the file name"),
    ("cap above daily", "team: t\nbudget: {per_day: 1, per_month: 2, per_query: 5}\n", 2, "per_query <= per_day"),
    ("bad table name", "team: t\nbudget: {per_day: 1, per_month: 2, per_query: 1}\nallow:\n  tables: [marts]\n", 4, "not a valid name"),
    ("boolean as number", "team: t\nbudget: {per_day: true, per_month: 2, per_query: 1}\n", 2, "budget.per_day must be"),
]


@pytest.mark.parametrize("case,text,line,reason", BAD_RULES, ids=[c[0] for c in BAD_RULES])
def test_malformed_rule_file_is_refused_with_file_line_and_reason(tmp_path: Path, case, text, line, reason) -> None:
    path = tmp_path / "t.yml"
    path.write_text(text)
    with pytest.raises(RuleFileError) as err:
        load_rule_file(path)
    assert err.value.path == path and err.value.line == line and reason in err.value.reason


def test_the_project_rule_files_load() -> None:
    rules = load_rules(PROJECT / "governance_rules")
    assert {"mobility", "onboarding", "finance"} <= set(rules)
    assert rules["onboarding"].identity_clearance and not rules["mobility"].identity_clearance


def test_real_dbt_manifest_carries_privacy_classes() -> None:
    manifest = PROJECT / "dbt_project" / "target" / "manifest.json"
    if not manifest.exists():
        pytest.skip("dbt_project/target/manifest.json not built (dbt parse)")
    m = load_manifest(manifest)
    assert m.privacy["marts.pass_onboarding_funnel"]["home_neighbourhood_id"] == "quasi"
    assert m.privacy["staging.stg_pass_onboarding"]["birth_year"] == "identity"
    assert all(cls in ("public", "quasi", "identity") for cols in m.privacy.values() for cls in cols.values())


# ---------------------------------------------------------------- keys
def test_keys_store_only_a_hash_and_revocation_refuses(gw: Gateway, env: Env) -> None:
    key, info = create_key(gw.state, "analysts", "ana")
    stored = gw.state.con.execute("SELECT * FROM keys").fetchall()
    assert key not in json.dumps(stored, default=str)
    assert gw.query(key, "SELECT count(*) AS n FROM marts.demand").table.to_pylist() == [{"n": 20000}]
    assert revoke_key(gw.state, "ana") == 1
    refused = gw.query(key, "SELECT count(*) AS n FROM marts.demand")
    assert (refused.outcome, refused.rule, refused.status) == ("refused", "revoked_key", 401)
    assert gw.query("cfk_made_up", "SELECT 1").rule == "unauthenticated"
    assert [k.revoked_at is not None for k in list_keys(gw.state)] == [True]


# ---------------------------------------------------------------- policy and results
def test_allowed_query_returns_the_same_rows_as_bare_duckdb(gw: Gateway, env: Env) -> None:
    key, _ = create_key(gw.state, "analysts", "ana")
    sql = "SELECT category, sum(units) AS units FROM marts.demand GROUP BY category ORDER BY category"
    expected = bare(env, sql)  # before the gateway opens the file with its locked configuration
    r = gw.query(key, sql)
    assert r.outcome == "ok" and r.tables == ["marts.demand"]
    assert [tuple(d.values()) for d in r.table.to_pylist()] == expected


def test_identity_is_refused_without_clearance_and_clearance_gives_cells_not_rows(gw: Gateway) -> None:
    ana, _ = create_key(gw.state, "analysts", "ana")
    cleared, _ = create_key(gw.state, "cleared", "cleo")
    sql = "SELECT holder_email FROM marts.passes WHERE birth_year = 1777"
    refused = gw.query(ana, sql)
    assert refused.rule == "identity_column" and ("birth_year" in refused.message or "holder_email" in refused.message)
    assert CANARY not in (refused.message or "")
    # cleared: the rows were never published to it either; birth_year is a dimension of its cells
    rows = gw.query(cleared, sql)
    assert rows.outcome == "refused" and rows.table is None
    years = gw.query(cleared, "SELECT birth_year, sum(holders) AS n FROM marts.passes GROUP BY 1 ORDER BY 1 NULLS LAST")
    assert years.outcome == "ok", (years.rule, years.message)
    by_year = {r["birth_year"]: r["n"] for r in years.table.to_pylist()}
    assert 1777 not in by_year and sum(by_year.values()) == 6002 and min(by_year.values()) >= 5


def test_quasi_aggregates_are_cells_of_at_least_the_minimum(gw: Gateway) -> None:
    key, _ = create_key(gw.state, "analysts", "ana")
    per_home = gw.query(key, "SELECT home_neighbourhood_id, sum(holders) AS n FROM marts.passes GROUP BY 1 ORDER BY 1 NULLS LAST")
    assert per_home.outcome == "ok" and per_home.suppressed_groups == 0
    assert "__cf_group_size" not in per_home.table.column_names
    homes = {r["home_neighbourhood_id"]: r["n"] for r in per_home.table.to_pylist()}
    # N99's two passes were merged (with their smallest sibling) into the remainder: never alone
    assert "N99" not in homes and sum(homes.values()) == 6002 and min(homes.values()) >= 5
    funnel = gw.query(key, "SELECT home_neighbourhood_id, sum(passes_issued) AS n FROM marts.funnel GROUP BY 1")
    assert {r["home_neighbourhood_id"]: r["n"] for r in funnel.table.to_pylist()} == homes  # the two relations nest
    for sql in ("SELECT pass_id, count(*) FROM marts.passes GROUP BY pass_id", "SELECT pass_id FROM marts.passes"):
        r = gw.query(key, sql)
        assert r.outcome == "refused" and r.rule == "table_not_allowed" and "pass_id" in r.message and r.table is None


def test_a_view_is_published_as_cells_and_its_base_table_not_at_all(gw: Gateway) -> None:
    key, _ = create_key(gw.state, "analysts", "ana")
    ok = gw.query(key, "SELECT pass_type, sum(holders) AS n FROM staging.stg_onboarding GROUP BY 1 ORDER BY 1")
    assert ok.outcome == "ok" and sum(r["n"] for r in ok.table.to_pylist()) == 6002
    assert gw.query(key, "SELECT avg(birth_year) FROM staging.stg_onboarding").rule == "identity_column"
    assert gw.query(key, "SELECT count(*) FROM raw.onboarding WHERE holder_email LIKE 'C%'").rule == "table_not_allowed"


# ---------------------------------------------------------------- cost, ledger
def test_estimate_bounds_actual_and_actual_is_cache_independent(env: Env) -> None:
    sqls = [
        "SELECT category, sum(units) FROM marts.demand GROUP BY 1",
        "SELECT count(*) FROM marts.big WHERE x < 1000",  # zone maps skip row groups: actual < estimate
        "SELECT * FROM marts.demand ORDER BY units DESC LIMIT 5",
        "SELECT d.category, count(*) FROM marts.demand d JOIN marts.big b ON b.x = d.units GROUP BY 1",
    ]
    actuals = []
    for _ in range(2):  # a fresh gateway (new DuckDB instance: cold), then the same queries warm
        state = GovernanceState(env.governance_db)
        gateway = Gateway(state, load_rules(env.rules_dir), env.published, env.manifest)
        key, _ = create_key(state, "cleared", f"k{len(actuals)}")
        run = []
        for sql in sqls:
            cold = gateway.query(key, sql)
            warm = gateway.query(key, sql)
            assert cold.outcome == warm.outcome == "ok"
            assert cold.estimate >= cold.actual > 0 and cold.actual == warm.actual
            run.append(cold.actual)
        actuals.append(run)
        gateway.close()
        state.close()
    assert actuals[0] == actuals[1]
    filtered = actuals[0][1]
    state = GovernanceState(env.governance_db)
    settled = state.con.execute("SELECT min(estimate / actual) FROM ledger WHERE status = 'settled'").fetchone()[0]
    state.close()
    assert settled >= 1.0 and filtered < 300000 * 8 / 1e6  # fewer rows scanned than the table holds


def test_budget_is_enforced_and_failed_queries_are_free(env: Env) -> None:
    env2 = make_env(env.home.parent / "tight", analysts={"per_day": 0.5, "per_query": 0.5})
    state = GovernanceState(env2.governance_db)
    gateway = Gateway(state, load_rules(env2.rules_dir), env2.published, env2.manifest)
    key, _ = create_key(state, "analysts", "ana")
    big = "SELECT sum(x), sum(y) FROM marts.big"  # 300k rows x 16 bytes = 4.8 units
    assert gateway.query(key, big).rule == "per_query_cap"
    failing = gateway.query(key, "SELECT CAST(category || 'x' AS INTEGER) FROM marts.demand")
    assert failing.outcome == "failed" and failing.rule == "query_failed"
    assert ledger.spend(state, "analysts").day_spent == 0  # failed: nothing charged
    small = "SELECT sum(units) FROM marts.demand"  # 20k x 8 bytes = 0.16 units
    outcomes = [gateway.query(key, small) for _ in range(4)]
    assert [o.outcome for o in outcomes] == ["ok", "ok", "ok", "refused"]
    assert outcomes[-1].rule == "daily_budget" and "daily budget" in outcomes[-1].message
    spent = ledger.spend(state, "analysts")
    assert spent.day_spent <= 0.5 and spent.in_flight == 0
    gateway.close()
    state.close()
    with GovernanceState(env2.governance_db) as reopened:  # the spend kept in memory is the file's
        assert ledger.spend(reopened, "analysts") == spent


def test_ledger_row_and_audit_row_commit_together(gw: Gateway) -> None:
    key, _ = create_key(gw.state, "analysts", "ana")
    sql = "SELECT sum(units) FROM marts.demand"
    first = gw.query(key, sql)
    assert first.outcome == "ok"
    # a row written behind the gateway's back takes the seq its next audit row needs: that
    # INSERT fails, so the request's transaction (ledger row + audit row) is rolled back
    head = gw.state.con.execute("SELECT max(seq) FROM audit").fetchone()[0]
    gw.state.con.execute("INSERT INTO audit (seq, audit_id, ts, outcome, prev_hash, hash) VALUES (?, 'intruder', now()::TIMESTAMP, 'ok', 'x', 'y')", [head + 1])
    second = gw.query(key, sql)
    assert (second.outcome, second.rule, second.table) == ("failed", "internal_error", None)
    assert ledger.spend(gw.state, "analysts").day_spent == pytest.approx(first.actual)  # not charged
    assert gw.state.con.execute("SELECT count(*) FROM ledger").fetchone()[0] == 1
    # the failure itself is audited after the intruder (the chain head was re-read from the file)
    rows = gw.state.con.execute("SELECT audit_id, rule FROM audit WHERE seq > ? ORDER BY seq", [head]).fetchall()
    assert rows == [("intruder", None), (second.audit_id, "internal_error")]
    assert gw.query(key, sql).outcome == "ok"


# ---------------------------------------------------------------- audit
def test_every_request_is_audited_in_a_chain_that_detects_tampering(gw: Gateway) -> None:
    key, _ = create_key(gw.state, "analysts", "ana")
    ids = [gw.query(key, "SELECT count(*) FROM marts.demand").audit_id,
           gw.query(key, "SELECT birth_year FROM marts.passes").audit_id,
           gw.query(None, "SELECT 1").audit_id,
           gw.query(key, "SELECT 1; SELECT 2").audit_id]
    rows = {r["audit_id"]: r for r in audit.entries(gw.state)}
    assert [rows[i]["outcome"] for i in ids] == ["ok", "refused", "refused", "refused"]
    assert [rows[i]["rule"] for i in ids] == [None, "identity_column", "unauthenticated", "single_select"]
    assert json.loads(rows[ids[0]]["tables"]) == ["marts.demand"] and rows[ids[0]]["actual"] is not None
    assert rows[ids[1]]["key_name"] == "ana" and "marts.passes.birth_year" in json.loads(rows[ids[1]]["columns"])
    assert audit.verify(gw.state) == []
    gw.state.con.execute("UPDATE audit SET team = 'someone-else' WHERE audit_id = ?", [ids[1]])
    problems = audit.verify(gw.state)
    assert problems and ids[1] in problems[0]
    gw.state.con.execute("UPDATE audit SET team = 'analysts' WHERE audit_id = ?", [ids[1]])
    assert audit.verify(gw.state) == []
    gw.state.con.execute("DELETE FROM audit WHERE audit_id = ?", [ids[2]])
    assert any("deleted or inserted" in p for p in audit.verify(gw.state))


# ---------------------------------------------------------------- snapshots
def test_a_new_publish_switches_the_gateway_to_the_new_snapshot(gw: Gateway, env: Env) -> None:
    from support.governance_env import publish

    from warehouse.backends import DuckDBFile

    key, _ = create_key(gw.state, "analysts", "ana")
    assert gw.query(key, "SELECT count(*) AS n FROM marts.demand").table.to_pylist() == [{"n": 20000}]
    con = duckdb.connect(str(env.home / "warehouse.duckdb"))
    con.execute("DELETE FROM marts.demand WHERE units > 10")
    expected = con.execute("SELECT count(*) FROM marts.demand").fetchone()[0]
    con.execute("CHECKPOINT")
    con.close()
    # published without the teams' relations: the gateway has nothing it may serve the team
    DuckDBFile(env.home / "warehouse.duckdb").publish(env.published)
    r = gw.query(key, "SELECT count(*) AS n FROM marts.demand")
    assert r.rule == "no_snapshot" and r.table is None
    new = publish(env)
    r = gw.query(key, "SELECT count(*) AS n FROM marts.demand")
    assert r.table.to_pylist() == [{"n": expected}] and expected < 20000
    assert audit.entries(gw.state, 1)[0]["snapshot"] == new.name


# ---------------------------------------------------------------- HTTP, client, CLI
@pytest.fixture
def server(env: Env):
    state = GovernanceState(env.governance_db)
    gateway = Gateway(state, load_rules(env.rules_dir), env.published, env.manifest)
    with ServerThread(create_app(gateway)) as srv:
        srv.gateway = gateway
        yield srv
    gateway.close()
    state.close()


def test_http_formats_estimate_usage_and_the_python_client(server) -> None:
    key, _ = create_key(server.gateway.state, "analysts", "ana")
    sql = "SELECT category, count(*) AS n FROM marts.demand GROUP BY 1 ORDER BY 1"
    h = {"Authorization": f"Bearer {key}"}
    j = httpx.post(f"{server.url}/v1/query", json={"sql": sql}, headers=h).json()
    assert j["rows"] == [["food", 6667], ["parcels", 6667], ["pharmacy", 6666]] and j["actual"] <= j["estimate"]
    csv = httpx.post(f"{server.url}/v1/query", json={"sql": sql, "format": "csv"}, headers=h)
    assert csv.text.splitlines()[1] == '"food",6667' and csv.headers["x-audit-id"]
    arrow = httpx.post(f"{server.url}/v1/query", json={"sql": sql}, headers=h | {"Accept": "application/vnd.apache.arrow.stream"})
    assert pa.ipc.open_stream(arrow.content).read_all().num_rows == 3
    est = httpx.post(f"{server.url}/v1/estimate", json={"sql": sql}, headers=h).json()
    assert est["estimate"] == j["estimate"] and est["tables"] == ["marts.demand"]
    with Client(server.url, key) as c:
        df = c.query(sql)
        assert isinstance(df, pl.DataFrame) and df["n"].to_list() == [6667, 6667, 6666]
        assert c.query_pandas(sql)["n"].tolist() == [6667, 6667, 6666]
        assert c.estimate(sql)["estimate"] == j["estimate"]
        usage = c.usage()
        assert usage["team"] == "analysts" and usage["day_spent"] == pytest.approx(j["actual"] * 5, rel=1e-6)  # 3 HTTP + 2 client queries
        assert usage["day_left"] == pytest.approx(50 - usage["day_spent"])
        with pytest.raises(GatewayError) as err:
            c.query("SELECT birth_year FROM marts.passes")
        assert err.value.status == 403 and err.value.rule == "identity_column" and err.value.audit_id
    unauth = httpx.post(f"{server.url}/v1/query", json={"sql": sql})
    assert unauth.status_code == 401 and unauth.json()["error"]["rule"] == "unauthenticated"


def test_usage_requests_are_audited_accepted_or_refused(server) -> None:
    key, _ = create_key(server.gateway.state, "analysts", "ana")
    ok = httpx.get(f"{server.url}/v1/usage", headers={"Authorization": f"Bearer {key}"})
    anonymous = httpx.get(f"{server.url}/v1/usage")
    revoke_key(server.gateway.state, "ana")
    revoked = httpx.get(f"{server.url}/v1/usage", headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200 and ok.json()["team"] == "analysts" and ok.json()["audit_id"] == ok.headers["x-audit-id"]
    assert (anonymous.status_code, anonymous.json()["error"]["rule"]) == (401, "unauthenticated")
    assert (revoked.status_code, revoked.json()["error"]["rule"]) == (401, "revoked_key")
    ids = [ok.json()["audit_id"], anonymous.json()["error"]["audit_id"], revoked.json()["error"]["audit_id"]]
    rows = {r["audit_id"]: r for r in audit.entries(server.gateway.state)}
    assert [(rows[i]["outcome"], rows[i]["rule"], rows[i]["team"]) for i in ids] == [
        ("usage", None, "analysts"), ("refused", "unauthenticated", None), ("refused", "revoked_key", "analysts")]
    assert all(rows[i]["message"].startswith("GET /v1/usage") and rows[i]["sql"] is None for i in ids)
    assert audit.verify(server.gateway.state) == []


def test_cli_keys_query_budget_and_verify_audit(env: Env, server, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.cli import app
    from pipelines.cli import governance as governance_cli

    monkeypatch.setattr(governance_cli.console, "width", 200)
    runner = CliRunner()
    # the in-process server holds governance.duckdb; the CLI shares the same DuckDB instance
    home = ["--home", str(env.home)]
    created = runner.invoke(app, ["keys", "create", "--team", "analysts", "--name", "cli-user", "--rules", str(env.rules_dir), *home])
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("cfk_")
    listed = runner.invoke(app, ["keys", "list", *home])
    assert "cli-user" in listed.output and key not in listed.output
    out = runner.invoke(app, ["query", "SELECT category, count(*) AS n FROM marts.demand GROUP BY 1 ORDER BY 1", "--key", key, "--url", server.url])
    assert out.exit_code == 0 and "pharmacy" in out.output and "audit id" in out.output
    refused = runner.invoke(app, ["query", "SELECT holder_email FROM marts.passes", "--key", key, "--url", server.url])
    assert refused.exit_code == 2 and "identity_column" in refused.output and CANARY not in refused.output
    budget = runner.invoke(app, ["budget", "--rules", str(env.rules_dir), *home])
    assert budget.exit_code == 0 and "analysts" in budget.output
    assert runner.invoke(app, ["governance", "verify-audit", *home]).exit_code == 0
    server.gateway.state.con.execute("UPDATE audit SET sql = 'SELECT 42' WHERE seq = 1")
    broken = runner.invoke(app, ["governance", "verify-audit", *home])
    assert broken.exit_code == 1 and "BROKEN" in broken.output
    revoked = runner.invoke(app, ["keys", "revoke", "cli-user", *home])
    assert revoked.exit_code == 0
    again = runner.invoke(app, ["query", "SELECT 1", "--key", key, "--url", server.url])
    assert again.exit_code == 2 and "revoked_key" in again.output
    for cmd in (["keys", "--help"], ["serve", "--help"], ["query", "--help"], ["budget", "--help"], ["governance", "check", "--help"], ["governance", "verify-audit", "--help"]):
        assert runner.invoke(app, cmd).exit_code == 0


def test_governance_check_validates_rules_against_the_warehouse(env: Env) -> None:
    from pipelines.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["governance", "check", "--rules", str(env.rules_dir), "--manifest", str(env.manifest), "--home", str(env.home)])
    assert ok.exit_code == 0, ok.output
    assert "marts.passes: 1 column(s) without meta.privacy count as identity: note" in " ".join(ok.output.split())
    (env.rules_dir / "analysts.yml").write_text((env.rules_dir / "analysts.yml").read_text().replace("tables: [staging.stg_onboarding]", "tables: [staging.nope]"))
    bad = runner.invoke(app, ["governance", "check", "--rules", str(env.rules_dir), "--manifest", str(env.manifest), "--home", str(env.home)])
    assert bad.exit_code == 1 and "staging.nope" in bad.output
    (env.rules_dir / "analysts.yml").write_text("team: analysts\nbudget: {per_day: x}\n")
    malformed = runner.invoke(app, ["governance", "check", "--rules", str(env.rules_dir), "--home", str(env.home)])
    assert malformed.exit_code == 1 and "analysts.yml:2" in malformed.output.replace("\n", "")


def test_snapshot_builder_plants_the_canary(tmp_path: Path) -> None:
    env = make_env(tmp_path / "env")
    from warehouse.snapshots import current_snapshot

    snap = current_snapshot(env.published)
    con = duckdb.connect(str(snap), read_only=True)
    assert con.execute("SELECT count(*) FROM marts.passes WHERE holder_email LIKE ?", [CANARY + "%"]).fetchone()[0] == 1
    con.close()
