"""The PostgreSQL endpoint with asyncpg (binary results, inferred parameter types), a refusal
of each kind in each client library, and the connect/browse sequences of BI tools (fixtures in
tests/support/bi_probes.py) answered from the team's grant."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal

import asyncpg
import pg8000.dbapi
import psycopg
import psycopg2
import pytest
import sqlalchemy as sa
from support.bi_probes import SUPERSET_TEST_CONNECTION, TOOLS
from support.pg_gateway import BIG_SQL, SPEND_SQL, TIMEOUT_SQL, Pg, audit_id_of, pg  # noqa: F401 (pg is a fixture)

POLICY_SQL = "SELECT holder_email FROM marts.passes"
# (what, team, sql, SQLSTATE, rule)
REFUSALS = [
    ("policy", "analysts", POLICY_SQL, "42501", "identity_column"),
    ("budget", "broke", SPEND_SQL, "53400", "daily_budget"),  # after the team's first SPEND_SQL of the day
    ("cap", "tight", BIG_SQL, "53400", "per_query_cap"),
    ("timeout", "analysts", TIMEOUT_SQL, "57014", "timeout"),
]


def _asyncpg(pg: Pg, team: str = "analysts"):
    d = pg.dsn(team)
    return asyncpg.connect(host=d["host"], port=d["port"], user=d["user"], password=d["password"], database=d["dbname"], ssl=False)


# ------------------------------------------------------------------ asyncpg
def test_asyncpg_decodes_binary_results_of_every_type(pg: Pg) -> None:
    sql = ("SELECT 7::SMALLINT AS s, 8 AS i, 9::BIGINT AS b, 1.5::REAL AS r, 2.25::DOUBLE AS d, true AS t, 'x''y' AS v, "
           "DATE '2026-01-02' AS day, TIMESTAMP '2026-01-02 03:04:05.123456' AS ts, TIMESTAMPTZ '2026-01-02 03:04:05+00' AS tz, "
           "TIME '01:02:03' AS tm, 12345.678::DECIMAL(12,3) AS n1, (-0.0001)::DECIMAL(10,4) AS n2, 10000::DECIMAL(18,0) AS n3, "
           "123456789012345678.5::DECIMAL(38,1) AS n4, NULL::INTEGER AS nothing, '\\x00\\xFF'::BLOB AS blob "
           "FROM marts.demand LIMIT 1")

    async def run():
        con = await _asyncpg(pg)
        try:
            return await con.fetchrow(sql)
        finally:
            await con.close()

    row = asyncio.run(run())
    assert dict(row) == {
        "s": 7, "i": 8, "b": 9, "r": 1.5, "d": 2.25, "t": True, "v": "x'y", "day": dt.date(2026, 1, 2),
        "ts": dt.datetime(2026, 1, 2, 3, 4, 5, 123456), "tz": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "tm": dt.time(1, 2, 3), "n1": Decimal("12345.678"), "n2": Decimal("-0.0001"), "n3": Decimal("10000"),
        "n4": Decimal("123456789012345678.5"), "nothing": None, "blob": b"\x00\xff",
    }


def test_asyncpg_prepared_statement_with_typed_parameters_is_billed_like_http(pg: Pg) -> None:
    sql = "SELECT category, count(*) AS n, sum(units) AS units FROM marts.demand WHERE category = $1 AND demand_date >= $2 AND units > $3 GROUP BY category"

    async def run():
        con = await _asyncpg(pg)
        try:
            stmt = await con.prepare(sql)
            params = [p.name for p in stmt.get_parameters()]
            first = await stmt.fetch("food", dt.date(2026, 1, 2), 3.0)
            second = await stmt.fetch("parcels", dt.date(2026, 1, 2), 3.0)
            injected = await stmt.fetch("food' OR '1'='1", dt.date(2026, 1, 2), 3.0)
            return params, first, second, injected
        finally:
            await con.close()

    params, first, second, injected = asyncio.run(run())
    assert params == ["text", "date", "float8"]  # inferred from the columns compared, as Postgres would
    bare = pg.gateway.query(pg.keys["analysts"], sql.replace("$1", "'food'").replace("$2", "DATE '2026-01-02'").replace("$3", "3.0"))
    assert [tuple(r) for r in first] == [tuple(r.values()) for r in bare.table.to_pylist()]
    assert first[0]["category"] == "food" and second[0]["category"] == "parcels" and injected == []
    rows = pg.state.con.execute("SELECT estimate, actual, outcome FROM audit WHERE team = 'analysts' AND sql LIKE '%demand_date >=%' ORDER BY seq").fetchall()
    assert [r[2] for r in rows] == ["ok"] * 4 and rows[0][:2] == rows[-1][:2] and rows[0][1] > 0


# ------------------------------------------------------------------ each refusal in each client library
def _psycopg(pg: Pg, team: str, sql: str) -> tuple[str, str, type]:
    with psycopg.connect(**pg.dsn(team)) as c, pytest.raises(psycopg.Error) as e:
        c.execute(sql)
    return e.value.sqlstate, str(e.value), type(e.value)


def _psycopg_prepared(pg: Pg, team: str, sql: str) -> tuple[str, str, type]:
    with psycopg.connect(**pg.dsn(team)) as c, pytest.raises(psycopg.Error) as e:
        c.execute(sql + " LIMIT %s", (5,), prepare=True)
    return e.value.sqlstate, str(e.value), type(e.value)


def _psycopg2(pg: Pg, team: str, sql: str) -> tuple[str, str, type]:
    con = psycopg2.connect(**pg.dsn(team))
    try:
        with pytest.raises(psycopg2.Error) as e:
            con.cursor().execute(sql)
        return e.value.pgcode, e.value.pgerror, type(e.value)
    finally:
        con.close()


def _pg8000(pg: Pg, team: str, sql: str) -> tuple[str, str, type]:
    d = pg.dsn(team)
    con = pg8000.dbapi.connect(host=d["host"], port=d["port"], user=d["user"], password=d["password"], database=d["dbname"])
    try:
        with pytest.raises(pg8000.dbapi.DatabaseError) as e:
            con.cursor().execute(sql)
        fields = e.value.args[0]
        return fields["C"], fields["M"], type(e.value)
    finally:
        con.close()


def _asyncpg_error(pg: Pg, team: str, sql: str) -> tuple[str, str, type]:
    async def run():
        con = await _asyncpg(pg, team)
        try:
            with pytest.raises(asyncpg.PostgresError) as e:
                await con.fetch(sql)
            return e.value.sqlstate, str(e.value), type(e.value)
        finally:
            await con.close()

    return asyncio.run(run())


def _sqlalchemy(pg: Pg, team: str, sql: str) -> tuple[str, str, type]:
    url = sa.URL.create("postgresql+psycopg", username=f"{team}-key", password=pg.keys[team], host="127.0.0.1", port=pg.port, database="civicflow")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c, pytest.raises(sa.exc.DBAPIError) as e:
            c.execute(sa.text(sql))
        return e.value.orig.sqlstate, str(e.value.orig), type(e.value)
    finally:
        engine.dispose()


CLIENTS = {"psycopg": _psycopg, "psycopg-prepared": _psycopg_prepared, "psycopg2": _psycopg2, "pg8000": _pg8000,
           "asyncpg": _asyncpg_error, "sqlalchemy": _sqlalchemy}
EXPECTED_CLASS = {  # the library's own exception class for each SQLSTATE
    "psycopg": {"42501": psycopg.errors.InsufficientPrivilege, "53400": psycopg.errors.ConfigurationLimitExceeded, "57014": psycopg.errors.QueryCanceled},
    "psycopg2": {"42501": psycopg2.errors.InsufficientPrivilege, "53400": psycopg2.errors.ConfigurationLimitExceeded, "57014": psycopg2.errors.QueryCanceled},
    "asyncpg": {"42501": asyncpg.InsufficientPrivilegeError, "53400": asyncpg.ConfigurationLimitExceededError, "57014": asyncpg.QueryCanceledError},
}


@pytest.mark.parametrize("client", list(CLIENTS))
def test_policy_budget_and_timeout_refusals_surface_in_each_client_with_their_sqlstate(pg: Pg, client: str) -> None:
    first = pg.gateway.query(pg.keys["broke"], SPEND_SQL)
    assert first.outcome == "ok"
    for what, team, sql, state, rule in REFUSALS:
        got_state, message, cls = CLIENTS[client](pg, team, sql)
        assert got_state == state, (client, what, message)
        assert f"rule {rule}" in message, (client, what, message)
        expected = EXPECTED_CLASS.get(client.split("-")[0], {}).get(state)
        if expected is not None:
            assert issubclass(cls, expected), (client, what, cls)
        audited = pg.audit(audit_id_of(message))
        assert audited[0] == team and audited[3] == rule and audited[2] in ("refused", "failed")
    charged = pg.state.con.execute("SELECT team, sum(actual) FROM ledger WHERE status = 'settled' GROUP BY team").fetchall()
    assert charged == [("broke", pytest.approx(first.actual))]  # refusals and timeouts are free


# ------------------------------------------------------------------ BI tools' connect and browse sequences
def _run_all(c: psycopg.Connection, queries: list[str], prepare: bool) -> list[list[tuple]]:
    answers = []
    for q in queries:
        cur = c.execute(q, prepare=prepare) if prepare and ";" not in q.strip().rstrip(";") else c.execute(q)
        results = [cur.fetchall() if cur.description else []]
        while cur.nextset():
            results.append(cur.fetchall() if cur.description else [])
        answers.append(results[-1] if len(results) == 1 else results)
    return answers


@pytest.mark.parametrize("tool", list(TOOLS))
@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_bi_tool_connect_sequence_is_answered_from_the_grant(pg: Pg, tool: str, protocol: str) -> None:
    before = pg.server.stats.probe_fallbacks
    with psycopg.connect(**pg.dsn(), autocommit=True) as c:
        answers = _run_all(c, TOOLS[tool], prepare=protocol == "extended")
        assert c.execute("SELECT count(*) FROM marts.demand").fetchone() == (20000,)  # and then a real query
    assert pg.server.stats.probe_fallbacks == before, f"{tool}: a probe DuckDB could not run was answered empty"
    text = repr(answers)
    assert "salaries" not in text and "holder_email" not in text and "CANARY" not in text
    listing = {
        "metabase": lambda a: {r[1] for r in a[6]},  # describe-database: table names of marts
        "dbeaver": lambda a: {r[2] for r in a[12]},  # the schema's relations
        "grafana": lambda a: {r[0] for r in a[3]},  # showTables('marts')
        "power_bi": lambda a: {r[1] for r in a[1]},  # the navigator
    }[tool](answers)
    assert {"demand", "passes", "funnel"} <= listing and "salaries" not in listing
    # a table's columns with PostgreSQL's types: OIDs for DBeaver (PgJDBC), names for Grafana and Power BI
    columns = {"dbeaver": lambda a: {r[2]: r[3] for r in a[13]}, "grafana": lambda a: dict(a[5]), "power_bi": lambda a: {r[0]: r[3] for r in a[2]}}
    if tool in columns:
        got = columns[tool](answers)
        want = {"pass_type": 1043, "home_neighbourhood_id": 1043, "holders": 20} if tool == "dbeaver" else \
            {"pass_type": "character varying", "home_neighbourhood_id": "character varying", "holders": "bigint"}
        assert got == want  # identity (birth_year, holder_email): not cleared, not there
    if tool == "metabase":  # describe-database carries dbt's descriptions; the tables it may select are the grant only
        assert {r[1]: r[3] for r in answers[6]}["demand"] == "Units demanded per neighbourhood, category and day"
        assert {(r[1], r[2]) for r in answers[5]} == {("marts", "big"), ("marts", "demand"), ("marts", "funnel"), ("marts", "passes"),
                                                       ("staging", "stg_onboarding")}
    if tool == "dbeaver":
        assert answers[3] == [("marts", "analysts-key")]  # current_schema() is search_path's first, as SHOW says
    if tool == "power_bi":
        assert answers[0][0][0][0].startswith("PostgreSQL 16") and len(answers[0][1]) > 10  # version, then the types


def _columns(insp, table: str) -> dict[str, str]:
    return {c["name"]: repr(c["type"]) for c in insp.get_columns(table, schema="marts")}


def test_superset_lists_schemas_tables_and_columns_through_sqlalchemy(pg: Pg) -> None:
    before = pg.server.stats.probe_fallbacks
    url = sa.URL.create("postgresql+psycopg2", username="analysts-key", password=pg.keys["analysts"], host="127.0.0.1", port=pg.port, database="civicflow")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            assert [tuple(r) for r in c.execute(sa.text(SUPERSET_TEST_CONNECTION[0]))] == [(1,)]
        insp = sa.inspect(engine)
        assert "marts" in insp.get_schema_names() and "secret" not in insp.get_schema_names()
        assert {"demand", "passes", "funnel", "big"} == set(insp.get_table_names(schema="marts"))
        assert insp.get_view_names(schema="marts") == []
        # what Superset lists for a table: the granted columns, in order, with their types
        assert _columns(insp, "demand") == {"neighbourhood_id": "VARCHAR()", "category": "VARCHAR()", "demand_date": "DATE()",
                                            "units": "DOUBLE_PRECISION(precision=53)"}
        assert list(_columns(insp, "demand")) == ["neighbourhood_id", "category", "demand_date", "units"]
        # dbt's descriptions, as comments (Superset shows them)
        assert {c["name"]: c["comment"] for c in insp.get_columns("demand", schema="marts")}["units"] == "units picked up that day"
        assert insp.get_table_comment("demand", schema="marts") == {"text": "Units demanded per neighbourhood, category and day"}
        passes = _columns(insp, "passes")  # published as cells: the count of holders is a column; identity is not granted
        assert passes == {"pass_type": "VARCHAR()", "home_neighbourhood_id": "VARCHAR()", "holders": "BIGINT()"}
        with pytest.raises(sa.exc.NoSuchTableError):
            insp.get_columns("salaries", schema="secret")  # not granted: not there
        # a published copy has no keys or indexes, and says so (not an error)
        assert insp.get_pk_constraint("passes", schema="marts") == {"name": None, "constrained_columns": []}
        assert insp.get_foreign_keys("passes", schema="marts") == []
        assert insp.get_indexes("passes", schema="marts") == []
        assert insp.get_unique_constraints("passes", schema="marts") == []
        # and a table Superset reflects can be queried through SQLAlchemy Core, through the gateway
        demand = sa.Table("demand", sa.MetaData(), schema="marts", autoload_with=engine)
        with engine.connect() as c:
            total = c.execute(sa.select(sa.func.count()).select_from(demand).where(demand.c.category == "food")).scalar_one()
        assert total == 6667
    finally:
        engine.dispose()
    assert pg.server.stats.probe_fallbacks == before, "a probe DuckDB could not run was answered empty"
