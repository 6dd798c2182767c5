"""Privacy by construction, attacked: every class of the issue-15 findings, several phrasings
each, over real HTTP to a gateway on 127.0.0.1 reading what publishing built for each team.

The warehouse (tests/support/governance_env.py) plants what must never come back:
* pass P4242, the only holder born in 1777 (an identity value; the canary in its e-mail);
* neighbourhood N99, where only two passes live (a cell below every team's minimum of 5);
* the server's own paths (settings).
Each attempt asserts on what came back — the rows' numbers and strings — not on a refusal
message: an attempt may be answered, as long as the answer holds nothing protected.
"""

from __future__ import annotations

import json
import re
from itertools import chain

import httpx
import pytest
from support.governance_env import CANARY, CANARY_YEAR, ServerThread, make_env

from governance.gateway import Gateway
from governance.keys import create_key
from governance.rules import load_rules
from governance.server import create_app
from governance.state import GovernanceState

MIN = 5  # min_group_size of both teams in the test rules
N99 = 2  # passes in neighbourhood N99
PASS_ID = re.compile(r"\bP\d{1,5}\b")

# (name, team, sql, numbers that must not appear in the rows)
A, C = "analysts", "cleared"
ATTEMPTS: list[tuple[str, str, str, set]] = [
    # conditional aggregation inside an accepted group
    ("case sum funnel", A, "SELECT sum(CASE WHEN home_neighbourhood_id = 'N99' THEN passes_issued END) AS n FROM marts.funnel", {N99}),
    ("case sum per type", A, "SELECT pass_type, sum(CASE WHEN home_neighbourhood_id = 'N99' THEN passes_issued ELSE 0 END) AS n FROM marts.funnel GROUP BY 1", {N99}),
    ("boolean product", A, "SELECT sum(holders * (home_neighbourhood_id = 'N99')::INT) AS n FROM marts.passes", {N99}),
    ("iif like", A, "SELECT sum(iif(home_neighbourhood_id LIKE '%99', holders, 0)) AS n FROM marts.passes", {N99}),
    ("case on identity", C, f"SELECT sum(CASE WHEN birth_year = {CANARY_YEAR} THEN holders END) AS n FROM marts.passes", {1}),
    ("case returns the year", C, "SELECT sum(CASE WHEN birth_year < 1900 THEN birth_year END) AS y FROM marts.passes", set()),
    ("case in a CTE", A, "WITH f AS (SELECT * FROM marts.funnel) SELECT sum(CASE WHEN home_neighbourhood_id = 'N99' THEN passes_issued END) FROM f", {N99}),
    # FILTER
    ("filter funnel", A, "SELECT sum(passes_issued) FILTER (WHERE home_neighbourhood_id = 'N99') AS n FROM marts.funnel", {N99}),
    ("filter per type", A, "SELECT pass_type, sum(passes_issued) FILTER (WHERE home_neighbourhood_id = 'N99') AS n FROM marts.funnel GROUP BY 1", {N99}),
    ("filter count rows", A, "SELECT count(*) FILTER (WHERE home_neighbourhood_id = 'N99') AS n, sum(holders) FILTER (WHERE home_neighbourhood_id = 'N99') AS h FROM marts.passes", {1, N99}),
    ("filter identity", C, f"SELECT sum(holders) FILTER (WHERE birth_year = {CANARY_YEAR}) AS n FROM marts.passes", {1}),
    ("filter max year", C, "SELECT max(birth_year) FILTER (WHERE birth_year < 1800) AS y FROM marts.passes", set()),
    # join / UNION / range inflation
    ("range inflation", A, "SELECT f.home_neighbourhood_id, sum(f.passes_issued) AS n FROM marts.funnel f, range(10) GROUP BY 1", {N99 * 10}),
    ("join inflation", A, "SELECT f.home_neighbourhood_id, sum(f.passes_issued) AS n FROM marts.funnel f JOIN marts.demand d ON d.units < 1 GROUP BY 1", set()),
    ("big join inflation", A, "SELECT f.home_neighbourhood_id, count(*) AS n FROM marts.funnel f JOIN marts.big b ON b.x < 1000 GROUP BY 1", {N99 * 1000}),
    ("union self", A, "SELECT h, sum(n) AS n FROM (SELECT home_neighbourhood_id h, passes_issued n FROM marts.funnel UNION ALL SELECT home_neighbourhood_id, passes_issued FROM marts.funnel) GROUP BY h", {2 * N99}),
    ("union cells", A, "SELECT h, sum(n) FROM (SELECT home_neighbourhood_id h, holders n FROM marts.passes UNION ALL SELECT home_neighbourhood_id, holders FROM marts.passes UNION ALL SELECT home_neighbourhood_id, holders FROM marts.passes) GROUP BY h", {3 * N99}),
    ("range on identity", C, f"SELECT birth_year, sum(holders) AS n FROM marts.passes, range(100) WHERE birth_year < 1800 OR birth_year = {CANARY_YEAR} GROUP BY 1", {100}),
    ("self join", A, "SELECT a.home_neighbourhood_id, sum(a.holders) AS n FROM marts.passes a JOIN marts.passes b USING (pass_type) GROUP BY 1", set()),
    ("union with a constant", A, "SELECT h, sum(n) AS n FROM (SELECT home_neighbourhood_id h, passes_issued n FROM marts.funnel UNION ALL SELECT 'N9' || '9', 100) GROUP BY h", {100 + N99}),
    # alias collision with the gateway's group-size column
    ("alias collision", A, "SELECT home_neighbourhood_id, sum(passes_issued) AS __cf_group_size FROM marts.funnel GROUP BY 1", set()),
    ("alias collision filtered", A, "SELECT count(*) AS __cf_group_size FROM marts.passes WHERE home_neighbourhood_id = 'N99'", set()),
    ("alias collision quoted", A, 'SELECT home_neighbourhood_id, 100000 AS "__CF_GROUP_SIZE", sum(holders) AS n FROM marts.passes GROUP BY 1', set()),
    ("alias collision identity", C, "SELECT birth_year, 1000000 AS __cf_group_size, sum(holders) AS n FROM marts.passes GROUP BY 1", set()),
    # value aggregates
    ("first", C, "SELECT first(birth_year ORDER BY birth_year) AS y FROM marts.passes", set()),
    ("last", C, "SELECT last(birth_year ORDER BY birth_year DESC) AS y FROM marts.passes", set()),
    ("mode", C, "SELECT mode(birth_year) FILTER (WHERE birth_year < 1900) AS y FROM marts.passes", set()),
    ("arg_max_null", C, "SELECT arg_max_null(birth_year, -birth_year) AS y FROM marts.passes", set()),
    ("arg_min_nulls_last", C, "SELECT arg_min_nulls_last(birth_year, birth_year) AS y FROM marts.passes", set()),
    ("arg_min", C, "SELECT arg_min(birth_year, birth_year) AS y FROM marts.passes", set()),
    ("min_by", C, "SELECT min_by(birth_year, birth_year) AS y FROM marts.passes", set()),
    ("min", C, "SELECT min(birth_year) AS y FROM marts.passes", set()),
    ("max of negative", C, "SELECT max(-birth_year) AS y FROM marts.passes", {-CANARY_YEAR}),
    ("any_value filtered", C, "SELECT any_value(birth_year) FILTER (WHERE birth_year < 1900) AS y FROM marts.passes", set()),
    ("list element", C, "SELECT list(birth_year ORDER BY birth_year)[1] AS y FROM marts.passes", set()),
    ("string_agg", C, "SELECT string_agg(birth_year::VARCHAR, ',' ORDER BY birth_year) AS y FROM marts.passes", set()),
    ("histogram", C, "SELECT histogram(birth_year) AS y FROM marts.passes", set()),
    ("quantile_disc 0", C, "SELECT quantile_disc(birth_year, 0.0) AS y FROM marts.passes", set()),
    ("first smallest cell", A, "SELECT first(home_neighbourhood_id ORDER BY passes_issued) AS h, min(passes_issued) AS n FROM marts.funnel", {N99}),
    ("arg_min cell", A, "SELECT arg_min(home_neighbourhood_id, passes_issued) AS h FROM marts.funnel", set()),
    ("min cell", A, "SELECT min(passes_issued) AS n FROM marts.funnel", {N99}),
    ("arg_min_nulls_last cell", A, "SELECT arg_min_nulls_last(passes_issued, passes_issued) AS n FROM marts.funnel", {N99}),
    # the cleared team reading raw rows behind what it was granted
    ("raw star", C, "SELECT * FROM raw.onboarding", set()),
    ("raw count", C, "SELECT count(*) FROM raw.onboarding WHERE birth_year < 1800", {1}),
    ("raw query_table", C, "SELECT * FROM query_table('raw.onboarding')", set()),
    ("raw through query()", C, "SELECT * FROM query('SELECT holder_email, birth_year FROM raw.onboarding')", set()),
    ("raw catalog-qualified", C, "SELECT * FROM warehouse.raw.onboarding", set()),
    ("view rows", C, "SELECT pass_id, birth_year FROM staging.stg_onboarding", set()),
    ("view identity rows", C, "SELECT birth_year, holder_email FROM marts.passes", set()),
    # listing people one by one through a cross join
    ("cross join listing", C, "SELECT s.*, r.range FROM staging.stg_onboarding s, range(1000) r", set()),
    ("cross join demand", C, "SELECT p.* FROM marts.passes p CROSS JOIN marts.demand d LIMIT 900", set()),
    ("ordered listing", C, "SELECT birth_year, home_neighbourhood_id, pass_type FROM marts.passes ORDER BY birth_year", set()),
    ("distinct years", C, "SELECT DISTINCT birth_year FROM marts.passes ORDER BY 1", set()),
    ("row number listing", C, "SELECT row_number() OVER (ORDER BY birth_year) AS i, birth_year FROM marts.passes", set()),
    # DESCRIBE / SHOW / SUMMARIZE
    ("describe raw", A, "DESCRIBE raw.onboarding", set()),
    ("describe cells", A, "DESCRIBE marts.passes", set()),
    ("show all tables", A, "SHOW ALL TABLES", set()),
    ("show tables", C, "SHOW TABLES", set()),
    ("summarize cells", C, "SUMMARIZE marts.passes", set()),
    ("summarize raw", C, "SUMMARIZE raw.onboarding", set()),
    ("describe in a subquery", C, "SELECT * FROM (DESCRIBE raw.onboarding)", set()),
    ("summarize in a subquery", C, "SELECT * FROM (SUMMARIZE marts.passes)", set()),
    # settings and system functions
    ("current_setting temp", A, "SELECT current_setting('temp_directory') AS s", set()),
    ("current_setting home", A, "SELECT current_setting('home_directory') AS s", set()),
    ("current_setting allowed", C, "SELECT current_setting('allowed_directories') AS s", set()),
    ("current_setting in a subquery", A, "SELECT count(*) FROM marts.demand WHERE current_setting('extension_directory') LIKE '/%'", set()),
    ("setting through query()", A, "SELECT * FROM query('SELECT current_setting(''temp_directory'') AS s')", set()),
    ("getvariable", A, "SELECT getvariable('x') AS s", set()),
    ("version", A, "SELECT version() AS s", set()),
    ("duckdb_settings", A, "SELECT * FROM duckdb_settings()", set()),
    ("duckdb_databases", C, "SELECT path FROM duckdb_databases()", set()),
    ("current_database", A, "SELECT current_database() AS s", set()),
]
# Differencing two accepted answers (a, b): a - b must be 0 or at least MIN people, never a
# protected count. (team, sql_a, sql_b, forbidden differences)
DIFFERENCES: list[tuple[str, str, str, str, set]] = [
    ("event total minus known neighbourhoods", A, "SELECT sum(passes_issued) FROM marts.funnel WHERE pass_type = 'event'",
     "SELECT sum(passes_issued) FROM marts.funnel WHERE pass_type = 'event' AND home_neighbourhood_id IS NOT NULL", {N99}),
    ("total minus listed neighbourhoods", A, "SELECT sum(passes_issued) FROM marts.funnel",
     "SELECT sum(passes_issued) FROM marts.funnel WHERE home_neighbourhood_id IN ('N0','N1','N2','N3','N4','N5','N6','N7','N8','N9','N10','N11')", {N99}),
    ("total minus not N99", A, "SELECT sum(holders) FROM marts.passes", "SELECT sum(holders) FROM marts.passes WHERE home_neighbourhood_id IS DISTINCT FROM 'N99'", {N99}),
    ("cells minus funnel", A, "SELECT sum(holders) FROM marts.passes WHERE pass_type = 'event'", "SELECT sum(passes_issued) FROM marts.funnel WHERE pass_type = 'event'", {N99}),
    ("view minus cells", A, "SELECT sum(holders) FROM staging.stg_onboarding WHERE pass_type = 'event'",
     "SELECT sum(holders) FROM marts.passes WHERE pass_type = 'event' AND home_neighbourhood_id IS NOT NULL", {N99}),
    ("all years minus not canary", C, "SELECT sum(holders) FROM marts.passes", f"SELECT sum(holders) FROM marts.passes WHERE birth_year <> {CANARY_YEAR}", {1}),
    ("known years minus modern", C, "SELECT sum(holders) FROM marts.passes WHERE birth_year IS NOT NULL", "SELECT sum(holders) FROM marts.passes WHERE birth_year >= 1940", {1}),
    ("view minus cells, cleared", C, "SELECT sum(holders) FROM staging.stg_onboarding", "SELECT sum(holders) FROM marts.passes WHERE birth_year >= 1940", {1}),
    ("funnel minus year cells", C, "SELECT sum(passes_issued) FROM marts.funnel WHERE pass_type = 'event'",
     "SELECT sum(holders) FROM marts.passes WHERE pass_type = 'event' AND birth_year IS NOT NULL", {1, N99}),
    ("type cells minus year cells", C, "SELECT sum(holders) FROM marts.passes WHERE pass_type = 'transit'",
     "SELECT sum(holders) FROM marts.passes WHERE pass_type = 'transit' AND birth_year BETWEEN 1940 AND 2000", {1}),
]
# One query whose rows hold a total and its parts: total - sum(parts) must be 0 or >= MIN.
GROUPING = [
    ("grouping sets", A, "SELECT home_neighbourhood_id AS g, grouping(home_neighbourhood_id) AS is_total, sum(passes_issued) AS n FROM marts.funnel GROUP BY GROUPING SETS ((home_neighbourhood_id), ())"),
    ("rollup", A, "SELECT home_neighbourhood_id AS g, grouping(home_neighbourhood_id) AS is_total, sum(holders) AS n FROM marts.passes GROUP BY ROLLUP (home_neighbourhood_id)"),
    ("cube on identity", C, "SELECT birth_year AS g, grouping(birth_year) AS is_total, sum(holders) AS n FROM marts.passes GROUP BY CUBE (birth_year)"),
]
# error() oracles: the same query with the condition true and false must answer alike.
ORACLES = [
    ("error on the cell", A, "SELECT CASE WHEN sum(passes_issued) FILTER (WHERE home_neighbourhood_id = 'N99') = {v} THEN error('hit') ELSE 1 END AS x FROM marts.funnel", (N99, N99 + 1)),
    ("error on the year", C, "SELECT CASE WHEN min(birth_year) = {v} THEN error('hit') ELSE 1 END AS x FROM marts.passes", (CANARY_YEAR, CANARY_YEAR + 1)),
    ("cast oracle", C, "SELECT CAST(CASE WHEN min(birth_year) < {v} THEN 'x' ELSE '1' END AS INTEGER) AS x FROM marts.passes", (1800, 1700)),
    ("division oracle", A, "SELECT 1 // (CASE WHEN min(passes_issued) = {v} THEN 0 ELSE 1 END) AS x FROM marts.funnel", (N99, N99 + 1)),
]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    env = make_env(tmp_path_factory.mktemp("privacy") / "env", analysts={"timeout": 5}, cleared={"timeout": 5})
    state = GovernanceState(env.governance_db)
    gateway = Gateway(state, load_rules(env.rules_dir), env.published, env.manifest)
    with ServerThread(create_app(gateway)) as server:
        server.env = env
        server.keys = {team: create_key(state, team, f"{team}-attacker")[0] for team in (A, C)}
        yield server
    gateway.close()
    state.close()


def _post(srv, team: str, sql: str) -> httpx.Response:
    return httpx.post(f"{srv.url}/v1/query", json={"sql": sql}, headers={"Authorization": f"Bearer {srv.keys[team]}"}, timeout=60)


def _values(body: dict) -> list:
    out = []
    for value in chain.from_iterable(body.get("rows") or []):
        out.extend(value if isinstance(value, list) else value.values() if isinstance(value, dict) else [value])
    return out


def _assert_nothing_protected(srv, resp: httpx.Response, forbidden: set = frozenset()) -> dict:
    """No canary, no pass id, no N99, no server path, no 1777 and no `forbidden` number in the
    rows; the refusal text (the gateway's own) carries no value either."""
    body = resp.json()
    # what came back, less the column names (an unnamed column is titled with the attacker's own SQL)
    text = json.dumps({k: v for k, v in body.items() if k not in ("columns_out", "audit_id")})
    for protected in (CANARY, "@example.org", "N99", str(srv.env.home), "/tmp/"):
        assert protected not in text, protected
    rows_text = json.dumps(body.get("rows"))
    assert not PASS_ID.search(rows_text) and "holder_email" not in rows_text and "salaries" not in rows_text
    numbers = [v for v in _values(body) if isinstance(v, int | float) and not isinstance(v, bool)]
    strings = [str(v) for v in _values(body) if isinstance(v, str)]
    assert CANARY_YEAR not in numbers and not any(str(CANARY_YEAR) in s for s in strings), numbers
    assert not (set(numbers) & set(forbidden)), (set(numbers) & set(forbidden))
    return body


def _scalar(resp: httpx.Response) -> float:
    assert resp.status_code == 200, resp.text
    rows = resp.json()["rows"]
    return rows[0][0] or 0


@pytest.mark.parametrize("name,team,sql,forbidden", ATTEMPTS, ids=[a[0] for a in ATTEMPTS])
def test_attempt_returns_nothing_protected(srv, name: str, team: str, sql: str, forbidden: set) -> None:
    resp = _post(srv, team, sql)
    body = _assert_nothing_protected(srv, resp, forbidden)
    if resp.status_code == 200:  # answered: only from cells of >= MIN people (no row about one person)
        assert len(body["rows"]) < 6000


@pytest.mark.parametrize("name,team,a,b,forbidden", DIFFERENCES, ids=[d[0] for d in DIFFERENCES])
def test_differencing_two_accepted_answers_isolates_no_small_group(srv, name: str, team: str, a: str, b: str, forbidden: set) -> None:
    ra, rb = _post(srv, team, a), _post(srv, team, b)
    _assert_nothing_protected(srv, ra), _assert_nothing_protected(srv, rb)
    diff = abs(_scalar(ra) - _scalar(rb))
    assert diff not in forbidden and (diff == 0 or diff >= MIN), diff


@pytest.mark.parametrize("name,team,sql", GROUPING, ids=[g[0] for g in GROUPING])
def test_a_total_minus_its_parts_isolates_no_small_group(srv, name: str, team: str, sql: str) -> None:
    resp = _post(srv, team, sql)
    body = _assert_nothing_protected(srv, resp)
    if resp.status_code != 200:
        return
    totals = [r[2] for r in body["rows"] if r[1]]
    parts = [r[2] for r in body["rows"] if not r[1]]
    assert parts and all(p >= MIN for p in parts)
    for total in totals:
        assert total - sum(parts) == 0 or total - sum(parts) >= MIN


@pytest.mark.parametrize("name,team,template,values", ORACLES, ids=[o[0] for o in ORACLES])
def test_an_error_oracle_answers_alike_whatever_the_hidden_value(srv, name: str, team: str, template: str, values: tuple) -> None:
    answers = []
    for v in values:
        resp = _post(srv, team, template.format(v=v))
        body = _assert_nothing_protected(srv, resp)
        answers.append((resp.status_code, (body.get("error") or {}).get("rule"), body.get("rows")))
    assert answers[0] == answers[1], answers


def test_the_cleared_team_gets_identity_inside_cells_only(srv) -> None:
    """What clearance buys: birth_year as a dimension of cells of >= MIN holders."""
    resp = _post(srv, C, "SELECT birth_year, sum(holders) AS n FROM marts.passes GROUP BY 1 ORDER BY 1 NULLS LAST")
    body = _assert_nothing_protected(srv, resp)
    assert resp.status_code == 200 and len(body["rows"]) >= 50
    assert all(n >= MIN for _, n in body["rows"]) and sum(n for _, n in body["rows"]) == 6002
    # the team without clearance: the column is not in its relations at all
    refused = _post(srv, A, "SELECT birth_year, sum(holders) FROM marts.passes GROUP BY 1")
    assert refused.status_code == 403 and refused.json()["error"]["rule"] == "identity_column" and "rows" not in refused.json()


def test_there_are_at_least_sixty_new_attempts() -> None:
    assert len(ATTEMPTS) + len(DIFFERENCES) + len(GROUPING) + 2 * len(ORACLES) >= 60
