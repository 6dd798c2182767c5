"""Adversarial suite: each attempt goes over real HTTP to a gateway on 127.0.0.1 and must be
refused (or stopped) with a named rule, and no warehouse data may come back: a canary planted
in the identity columns never appears in any response, and no refusal carries result rows.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from support.governance_env import CANARY, CANARY_YEAR, ServerThread, make_env

from governance import ledger
from governance.gateway import Gateway
from governance.keys import create_key, revoke_key
from governance.rules import load_rules
from governance.server import create_app
from governance.state import GovernanceState

# Each team's SQL runs on the relations published for it (cells, no identity column it is not
# cleared for): what it names that is not there fails to plan, and the refusal says why.
POLICY = {"identity_column", "table_not_allowed", "table_function_not_allowed", "operator_not_allowed", "external_access", "plan_failed",
          "system_function", "quasi_aggregate_required", "quasi_value_aggregate"}
QUASI = {"quasi_aggregate_required", "quasi_value_aggregate", "table_not_allowed"}  # pass_id is not published: cells only
STATEMENT = {"single_select"}

ATTEMPTS = [
    # files and the outside world
    ("read_csv passwd", "SELECT * FROM read_csv('/etc/passwd')", POLICY),
    ("read_csv_auto", "SELECT * FROM read_csv_auto('/etc/hosts')", POLICY),
    ("glob", "SELECT * FROM glob('/etc/*')", POLICY),
    ("read_text", "SELECT * FROM read_text('/etc/passwd')", POLICY),
    ("read_blob", "SELECT * FROM read_blob('/etc/passwd')", POLICY),
    ("read_parquet", "SELECT * FROM read_parquet('/tmp/*.parquet')", POLICY),
    ("read_json", "SELECT * FROM read_json('/etc/passwd')", POLICY),
    ("bare file path", "SELECT * FROM '/etc/passwd'", POLICY),
    ("copy to", "COPY marts.passes TO '/tmp/leak.csv'", STATEMENT),
    ("copy select to", "COPY (SELECT * FROM marts.passes) TO '/tmp/leak.csv'", STATEMENT),
    ("export database", "EXPORT DATABASE '/tmp/leak'", STATEMENT),
    ("attach", "ATTACH '/tmp/other.duckdb' AS o", STATEMENT),
    ("install", "INSTALL httpfs", STATEMENT),
    ("load", "LOAD httpfs", STATEMENT),
    ("set", "SET enable_external_access = true", STATEMENT),
    ("reset", "RESET lock_configuration", STATEMENT),
    ("pragma", "PRAGMA table_info('marts.passes')", STATEMENT | {"system_function"}),
    ("pragma function", "SELECT * FROM pragma_table_info('marts.passes')", POLICY),
    ("pragma_storage_info", "SELECT * FROM pragma_storage_info('marts.passes')", POLICY),
    ("duckdb_settings", "SELECT * FROM duckdb_settings()", POLICY),
    ("information_schema", "SELECT * FROM information_schema.columns", POLICY),
    # statements smuggled in
    ("two statements", "SELECT 1; SELECT holder_email FROM marts.passes", STATEMENT),
    ("statement behind a comment", "SELECT 1 /* harmless */; DROP TABLE marts.passes", STATEMENT),
    ("line comment then statement", "SELECT count(*) FROM marts.demand -- x\n; COPY marts.passes TO '/tmp/x.csv'", STATEMENT),
    ("with insert", "WITH x AS (SELECT 1) INSERT INTO marts.demand SELECT * FROM marts.demand", STATEMENT),
    ("create table as", "CREATE TABLE t AS SELECT * FROM marts.passes", STATEMENT),
    ("explain", "EXPLAIN SELECT holder_email FROM marts.passes", STATEMENT),
    ("call", "CALL pragma_version()", STATEMENT),
    ("detach", "DETACH main", STATEMENT),
    # denied columns, however reached
    ("identity selected", "SELECT holder_email FROM marts.passes", POLICY),
    ("query()", "SELECT * FROM query('SELECT holder_email FROM marts.passes')", POLICY),
    ("through a view", "SELECT birth_year FROM staging.stg_onboarding", POLICY),
    ("through a CTE", "WITH p AS (SELECT * FROM marts.passes) SELECT pass_type, count(*) FROM p WHERE holder_email LIKE 'C%' GROUP BY 1", POLICY),
    ("through an alias", "SELECT e AS harmless FROM (SELECT holder_email AS e FROM marts.passes) s", POLICY),
    ("COLUMNS regex", "SELECT COLUMNS('.*mail.*') FROM marts.passes", POLICY),
    ("COLUMNS star", "SELECT max(COLUMNS(*)) FROM marts.passes", POLICY),
    ("summarize", "SUMMARIZE marts.passes", POLICY),
    ("filter only", f"SELECT count(*) FROM marts.passes WHERE birth_year = {CANARY_YEAR}", POLICY),
    ("filter via like", f"SELECT count(*) FROM marts.passes WHERE holder_email LIKE '{CANARY}%'", POLICY),
    ("join on identity", "SELECT count(*) FROM marts.passes a JOIN marts.demand d ON a.birth_year = d.units", POLICY),
    ("group by identity", "SELECT birth_year, count(*) FROM marts.passes GROUP BY birth_year", POLICY),
    ("order by identity", "SELECT pass_type FROM marts.passes ORDER BY holder_email LIMIT 1", POLICY),
    ("exists subquery", f"SELECT count(*) FROM marts.demand WHERE EXISTS (SELECT 1 FROM marts.passes WHERE birth_year = {CANARY_YEAR})", POLICY),
    ("list of identities", "SELECT list(holder_email) FROM marts.passes", POLICY),
    ("string_agg of identities", "SELECT string_agg(holder_email, ',') FROM marts.passes", POLICY),
    ("unclassified column", "SELECT count(*) FROM marts.passes WHERE note <> 'n'", POLICY),
    ("hash of identity", "SELECT md5(holder_email) FROM marts.passes", POLICY),
    ("cast error echo", f"SELECT CAST(holder_email AS INTEGER) FROM marts.passes WHERE birth_year = {CANARY_YEAR}", POLICY),
    ("not allowed schema", "SELECT * FROM secret.salaries", POLICY),
    ("raw base table", "SELECT * FROM raw.onboarding", POLICY),
    ("system catalog", "SELECT * FROM duckdb_tables()", POLICY),
    # quasi-identifiers
    ("quasi rows", "SELECT pass_id, home_neighbourhood_id FROM marts.passes", QUASI),
    ("list of quasi", "SELECT home_neighbourhood_id, list(pass_id) FROM marts.passes GROUP BY 1", QUASI),
    ("max of quasi", "SELECT max(pass_id) FROM marts.passes", QUASI),
    ("window over quasi", "SELECT count(*) OVER (PARTITION BY pass_id) FROM marts.passes", QUASI),
    ("union over quasi", "SELECT home_neighbourhood_id, count(*) FROM marts.passes GROUP BY 1 UNION ALL SELECT 'x', 1", {"quasi_aggregate_required"}),
    # cost and time: which guard stops each one is asserted in test_cost_and_time_attacks_are_stopped_by_the_named_guard
    ("range 1e12", "SELECT count(*) FROM range(1000000000000)", {"per_query_cap"}),
    ("cross join", "SELECT count(*) FROM marts.big a, marts.big b, marts.big c", {"timeout"}),
    ("wide cross join", "SELECT sum(a.x + a.y + b.x + b.y + c.x + c.y + d.x + d.y + e.x + e.y) FROM marts.big a, marts.big b, marts.big c, marts.big d, marts.big e", {"per_query_cap"}),
]
CAP = 20  # the analysts' per-query cap in the module's gateway (units)
COST_AND_TIME = {
    # range's estimated cardinality (1e12 rows x 8 bytes) is in the plan: refused before running
    "range 1e12": ("per_query_cap", 1e12 * 8 / 1e6),
    # count(*) reads no column, so the scans cost nothing (as in BigQuery); the 2.7e16-row
    # product is stopped by the team's timeout (1 s here) and charged nothing
    "cross join": ("timeout", 0.0),
    # reading columns: 5 scans x 300k rows x 16 bytes = 24 units, above the cap: never runs
    "wide cross join": ("per_query_cap", 5 * 300_000 * 16 / 1e6),
}
SUPPRESSED = [
    ("tiny group", "SELECT home_neighbourhood_id, sum(passes_issued) FROM marts.funnel WHERE home_neighbourhood_id = 'N99' GROUP BY 1"),
    ("group by pass id", "SELECT pass_id, count(*) AS n FROM marts.passes GROUP BY pass_id"),
    ("single pass count", "SELECT count(*) FROM marts.passes WHERE pass_id = 'P4242'"),
]


@pytest.fixture(scope="module")
def gateway_server(tmp_path_factory: pytest.TempPathFactory):
    env = make_env(tmp_path_factory.mktemp("adv") / "env", analysts={"timeout": 1, "per_query": CAP})
    state = GovernanceState(env.governance_db)
    gateway = Gateway(state, load_rules(env.rules_dir), env.published, env.manifest)
    with ServerThread(create_app(gateway)) as srv:
        srv.gateway, srv.env = gateway, env
        srv.key, _ = create_key(state, "analysts", "mallory")
        yield srv
    gateway.close()
    state.close()


def _post(srv, sql: str, key: str | None = None, path: str = "/v1/query") -> httpx.Response:
    return httpx.post(f"{srv.url}{path}", json={"sql": sql}, headers={"Authorization": f"Bearer {key or srv.key}"}, timeout=60)


def _assert_no_leak(resp: httpx.Response) -> None:
    assert CANARY not in resp.text and "@example.org" not in resp.text and str(CANARY_YEAR) not in resp.text.replace(resp.headers.get("x-audit-id", "-"), "")


# Whole-row reads of a relation about people: the team's file holds its cells only, so these
# answer those cells (each of at least min_group_size holders), never a holder's row or column.
CELL_READS = [
    ("star", "SELECT * FROM marts.passes"),
    ("row as struct", "SELECT c FROM marts.passes c"),
    ("query_table()", "SELECT * FROM query_table('marts.passes')"),
]


@pytest.mark.parametrize("name,sql", CELL_READS, ids=[a[0] for a in CELL_READS])
def test_whole_row_reads_of_people_return_cells_never_a_person(gateway_server, name: str, sql: str) -> None:
    resp = _post(gateway_server, sql)
    assert resp.status_code == 200, resp.text
    _assert_no_leak(resp)
    rows = [r[0] if isinstance(r[0], dict) else dict(zip(resp.json()["columns_out"], r, strict=True)) for r in resp.json()["rows"]]
    assert rows and all(set(r) == {"pass_type", "home_neighbourhood_id", "holders"} and r["holders"] >= 5 for r in rows)
    assert sum(r["holders"] for r in rows) == 6002  # every pass counted once, in cells (the two alone in N99 merged)


@pytest.mark.parametrize("name,sql,rules", ATTEMPTS, ids=[a[0] for a in ATTEMPTS])
def test_attempt_is_refused_without_leaking(gateway_server, name: str, sql: str, rules: set[str]) -> None:
    resp = _post(gateway_server, sql)
    assert resp.status_code >= 400, resp.text
    err = resp.json()["error"]
    assert err["rule"] in rules, err
    assert err["audit_id"] and "rows" not in resp.json()
    _assert_no_leak(resp)
    # the estimate endpoint refuses the same way (the cross join is only stopped at run time)
    if err["rule"] != "timeout":
        est = _post(gateway_server, sql, path="/v1/estimate")
        assert est.status_code >= 400 and est.json()["error"]["rule"] == err["rule"]
        _assert_no_leak(est)
    row = gateway_server.gateway.state.con.execute("SELECT outcome, rule, team FROM audit WHERE audit_id = ?", [err["audit_id"]]).fetchone()
    assert row[0] in ("refused", "failed") and row[1] == err["rule"] and row[2] == "analysts"


@pytest.mark.parametrize("name", sorted(COST_AND_TIME))
def test_cost_and_time_attacks_are_stopped_by_the_named_guard(gateway_server, name: str) -> None:
    sql = next(a[1] for a in ATTEMPTS if a[0] == name)
    rule, expected_estimate = COST_AND_TIME[name]
    con = gateway_server.gateway.state.con
    ledger_before = {r[0] for r in con.execute("SELECT entry_id FROM ledger").fetchall()}
    resp = _post(gateway_server, sql)
    assert resp.status_code == (402 if rule == "per_query_cap" else 504)
    body = resp.json()
    assert body["error"]["rule"] == rule and "rows" not in body and "columns_out" not in body
    _assert_no_leak(resp)
    outcome, estimate, actual, result_rows = con.execute(
        "SELECT outcome, estimate, actual, result_rows FROM audit WHERE audit_id = ?", [body["error"]["audit_id"]]).fetchone()
    assert estimate == pytest.approx(expected_estimate) and actual is None and result_rows is None
    new_ledger = [(status, act) for entry, status, act in con.execute("SELECT entry_id, status, actual FROM ledger").fetchall() if entry not in ledger_before]
    if rule == "per_query_cap":  # refused on the estimate: never reserved, never run
        assert outcome == "refused" and estimate > CAP and new_ledger == []
    else:  # under the cap, so it ran, and the timeout interrupted it: reserved, then released at 0
        assert outcome == "failed" and estimate <= CAP and new_ledger == [("released", 0.0)]


@pytest.mark.parametrize("name,sql", SUPPRESSED, ids=[s[0] for s in SUPPRESSED])
def test_small_groups_are_never_answered(gateway_server, name: str, sql: str) -> None:
    """N99's two passes were merged into a bigger cell at publish, and pass ids are not
    published: the answer is empty or a refusal, never a count of fewer than 5 passes."""
    resp = _post(gateway_server, sql)
    body = resp.json()
    if resp.status_code == 200:
        assert body["rows"] == [] or all(v is None or v >= 5 for row in body["rows"] for v in row if isinstance(v, int | float))
    else:
        assert body["error"]["rule"] == "table_not_allowed" and "rows" not in body
    _assert_no_leak(resp)


def test_revoked_key_is_refused(gateway_server) -> None:
    key, _ = create_key(gateway_server.gateway.state, "analysts", "short-lived")
    assert _post(gateway_server, "SELECT count(*) FROM marts.demand", key).status_code == 200
    revoke_key(gateway_server.gateway.state, "short-lived")
    resp = _post(gateway_server, "SELECT count(*) FROM marts.demand", key)
    assert resp.status_code == 401 and resp.json()["error"]["rule"] == "revoked_key" and "rows" not in resp.json()


def test_forged_and_missing_keys_are_refused(gateway_server) -> None:
    for headers in ({"Authorization": "Bearer cfk_deadbeef_forged"}, {"Authorization": "Basic abc"}, {}):
        resp = httpx.post(f"{gateway_server.url}/v1/query", json={"sql": "SELECT 1"}, headers=headers)
        assert resp.status_code == 401 and resp.json()["error"]["rule"] == "unauthenticated"


def test_budget_exhausted_by_concurrent_queries_never_overspends(tmp_path: Path) -> None:
    # each query costs 0.16 units (20k rows x 8 bytes); the day allows 1.0 → at most 6 may pass
    env = make_env(tmp_path / "env", analysts={"per_day": 1.0, "per_query": 1.0, "concurrency": 16})
    state = GovernanceState(env.governance_db)
    gateway = Gateway(state, load_rules(env.rules_dir), env.published, env.manifest)
    with ServerThread(create_app(gateway)) as srv:
        key, _ = create_key(state, "analysts", "burst")
        results: list[httpx.Response] = []
        lock = threading.Lock()

        def fire() -> None:
            r = _post(srv, "SELECT sum(units) FROM marts.demand", key)
            with lock:
                results.append(r)

        threads = [threading.Thread(target=fire) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        ok = [r for r in results if r.status_code == 200]
        refused = [r for r in results if r.status_code != 200]
        assert len(results) == 24 and 1 <= len(ok) <= 6
        assert {r.json()["error"]["rule"] for r in refused} <= {"daily_budget", "concurrency"}
        assert ledger.spend(state, "analysts").day_spent <= 1.0
        settled = state.con.execute("SELECT count(*), sum(actual) FROM ledger WHERE status = 'settled'").fetchone()
        assert settled[0] == len(ok) and settled[1] <= 1.0
    gateway.close()
    state.close()


def test_there_are_at_least_forty_attempts() -> None:
    assert len(ATTEMPTS) + len(SUPPRESSED) + 3 >= 40
