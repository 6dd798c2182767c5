"""The gateway's PostgreSQL endpoint with real clients on 127.0.0.1: psycopg 3, psycopg2,
pg8000, SQLAlchemy + pandas, psql. Every query goes through Gateway.query, so refusals,
billing and audit are asserted on what came back and on the ledger and audit rows."""

from __future__ import annotations

import shutil
import subprocess
import sys

import httpx
import pandas as pd
import psycopg
import psycopg2
import pytest
import sqlalchemy as sa
from support.governance_env import ServerThread
from support.pg_gateway import BIG_SQL, TIMEOUT_SQL, Pg, pg  # noqa: F401 (pg is a fixture)
from support.pg_gateway import audit_id_of as _audit_id
from support.rss import peak_rss_growth

from governance.keys import revoke_key
from governance.pgwire.answer import CHUNK_BYTES
from governance.server import create_app


# ------------------------------------------------------------------ login, as an attacker would try it
def test_login_needs_the_right_key_for_the_name(pg: Pg) -> None:
    with psycopg.connect(**pg.dsn()) as c:
        assert c.execute("SELECT count(*) FROM marts.demand").fetchone() == (20000,)
    attempts = {
        "wrong password": pg.dsn(password="cfk_00000000_not-the-key"),
        "another team's key": pg.dsn(password=pg.keys["cleared"]),
        "unknown user": dict(pg.dsn(), user="nobody"),
    }
    for what, dsn in attempts.items():
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(**dsn).close()
        assert e.value.sqlstate in ("28P01", None) and "password authentication failed" in str(e.value), what
    revoke_key(pg.state, "analysts-key")
    with pytest.raises(psycopg.OperationalError, match="was revoked"):
        psycopg.connect(**pg.dsn()).close()


def test_a_key_of_a_team_without_rules_is_refused_per_query(pg: Pg) -> None:
    with psycopg.connect(**pg.dsn("ghost")) as c, pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
        c.execute("SELECT 1")
    assert "rule unknown_team" in str(e.value)
    assert pg.audit(_audit_id(str(e.value)))[2:4] == ("refused", "unknown_team")


# ------------------------------------------------------------------ refusals with their SQLSTATE
def test_refusals_surface_in_psycopg_with_their_sqlstate(pg: Pg) -> None:
    cases = [
        ("analysts", "SELECT holder_email FROM marts.passes", "42501", "identity_column"),
        ("analysts", "SELECT * FROM read_csv('/etc/passwd')", "42501", None),
        ("analysts", "SELECT * FROM secret.salaries", "42501", "table_not_allowed"),
        ("analysts", "SELECT nope FROM marts.demand", "42703", "plan_failed"),
        ("analysts", "SELECT 1 FROM marts.nowhere", "42P01", "plan_failed"),
        ("tight", BIG_SQL, "53400", "per_query_cap"),
        ("analysts", TIMEOUT_SQL, "57014", "timeout"),
    ]
    for team, sql, state, rule in cases:
        with psycopg.connect(**pg.dsn(team)) as c:
            with pytest.raises(psycopg.Error) as e:
                c.execute(sql)
            assert e.value.sqlstate == state, (sql, str(e.value))
            row = pg.audit(_audit_id(str(e.value)))
            assert row[0] == team and row[2] in ("refused", "failed")
            if rule:
                assert f"rule {rule}" in str(e.value) and row[3] == rule
            # and over HTTP the same SQL is refused with the same rule
            assert pg.gateway.query(pg.keys[team], sql).rule == row[3]
    assert pg.state.con.execute("SELECT coalesce(sum(actual), 0) FROM ledger WHERE status <> 'reserved'").fetchone()[0] == 0


def test_refusals_surface_in_psycopg2_and_the_session_stays_usable(pg: Pg) -> None:
    con = psycopg2.connect(**pg.dsn("tight"))
    cur = con.cursor()
    with pytest.raises(psycopg2.Error) as e:
        cur.execute(BIG_SQL)
    assert e.value.pgcode == "53400" and "rule per_query_cap" in e.value.pgerror
    con.rollback()
    cur.execute("SELECT count(*) FROM marts.demand WHERE category = %s", ("food",))
    assert cur.fetchone() == (6667,)
    con.close()
    con = psycopg2.connect(**pg.dsn())
    with pytest.raises(psycopg2.Error) as e:
        con.cursor().execute(TIMEOUT_SQL)
    assert e.value.pgcode == "57014"
    con.close()


# ------------------------------------------------------------------ extended query, parameters, billing
def test_prepared_statement_with_parameters_and_injection_stays_a_value(pg: Pg) -> None:
    with psycopg.connect(**pg.dsn()) as c:
        sql = "SELECT count(*) FROM marts.demand WHERE category = %s AND units > %s AND demand_date >= %s"
        import datetime as dt

        got = c.execute(sql, ("food", 3, dt.date(2026, 1, 2)), prepare=True).fetchone()
        again = c.execute(sql, ("parcels", 3, dt.date(2026, 1, 2)), prepare=True).fetchone()
        bare = pg.gateway.query(pg.keys["analysts"], "SELECT count(*) FROM marts.demand WHERE category = 'food' AND units > 3 AND demand_date >= DATE '2026-01-02'")
        assert got[0] == bare.table.column(0)[0].as_py() and again != got
        # a value that is SQL stays a value: no row matches, nothing else runs
        assert c.execute("SELECT count(*) FROM marts.demand WHERE category = %s", ("food' OR '1'='1",)).fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT count(*) FROM marts.passes WHERE holder_email = %s", ("x",))


def test_billing_and_audit_equal_the_same_query_over_http(pg: Pg) -> None:
    sql = "SELECT category, sum(units) AS units FROM marts.demand GROUP BY category ORDER BY category"
    with ServerThread(create_app(pg.gateway)) as http:
        r = httpx.post(f"{http.url}/v1/query", json={"sql": sql}, headers={"Authorization": f"Bearer {pg.keys['analysts']}"}, timeout=30)
    assert r.status_code == 200
    http_id = r.headers["X-Audit-Id"]
    with psycopg.connect(**pg.dsn()) as c:
        rows = c.execute(sql).fetchall()
        ext_rows = c.execute(sql, prepare=True).fetchall()
    assert rows == ext_rows and len(rows) == 3
    audits = pg.state.con.execute(
        "SELECT audit_id, team, key_name, outcome, estimate, actual, result_rows, tables, columns, sql FROM audit WHERE sql = ? ORDER BY seq", [sql]).fetchall()
    assert len(audits) == 3 and audits[0][0] == http_id
    assert {a[1:] for a in audits} == {audits[0][1:]}  # same team, key, outcome, estimate, actual, rows, scans
    ledger_rows = pg.state.con.execute("SELECT estimate, actual, status FROM ledger WHERE team = 'analysts' ORDER BY created_at").fetchall()
    assert len(ledger_rows) == 3 and len(set(ledger_rows)) == 1 and ledger_rows[0][2] == "settled" and ledger_rows[0][1] > 0


# ------------------------------------------------------------------ session statements and probes
def test_session_statements_and_catalog_probes_are_scoped_to_the_grant(pg: Pg) -> None:
    with psycopg.connect(**pg.dsn(), autocommit=True) as c:
        for stmt in ("SET application_name = 'dbeaver'", "BEGIN", "COMMIT", "ROLLBACK", "DISCARD ALL", "SET search_path TO marts"):
            c.execute(stmt)
        assert c.execute("SHOW application_name").fetchone() == ("dbeaver",)
        assert c.execute("SHOW transaction isolation level").fetchone() == ("read committed",)
        assert c.execute("SELECT version()").fetchone()[0].startswith("PostgreSQL 16")
        tables = {tuple(r) for r in c.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall()}
        assert ("marts", "demand") in tables and ("secret", "salaries") not in tables and not any(s == "raw" for s, _ in tables)
        cols = {r[0] for r in c.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'passes'").fetchall()}
        assert "pass_type" in cols and "holder_email" not in cols and "birth_year" not in cols  # identity: not cleared
        rels = {r[0] for r in c.execute("SELECT relname FROM pg_catalog.pg_class").fetchall()}
        assert "salaries" not in rels and "demand" in rels
        # a probe has no data and no files behind it
        assert c.execute("SELECT count(*) FROM marts.passes WHERE pg_catalog.pg_table_is_visible(1) OR true").fetchone() == (0,)
        assert c.execute("SELECT * FROM read_csv('/etc/passwd') WHERE current_schema() IS NOT NULL").fetchall() == []
    with psycopg.connect(**pg.dsn("cleared")) as c:  # cleared: birth_year as a dimension of cells, never e-mails
        cols = {r[0] for r in c.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'passes'").fetchall()}
        assert "birth_year" in cols and "holder_email" not in cols


# ------------------------------------------------------------------ other clients
def test_pg8000_and_sqlalchemy_with_pandas(pg: Pg) -> None:
    import pg8000.dbapi

    dsn = pg.dsn()
    con = pg8000.dbapi.connect(host=dsn["host"], port=dsn["port"], user=dsn["user"], password=dsn["password"], database="civicflow")
    cur = con.cursor()
    cur.execute("SELECT category, count(*) FROM marts.demand WHERE category = %s GROUP BY category", ("food",))
    assert [list(r) for r in cur.fetchall()] == [["food", 6667]]
    con.close()
    url = sa.URL.create("postgresql+psycopg2", username="analysts-key", password=pg.keys["analysts"], host="127.0.0.1", port=pg.port, database="civicflow")
    engine = sa.create_engine(url)
    try:
        df = pd.read_sql("SELECT demand_date, category, sum(units) AS units FROM marts.demand GROUP BY ALL ORDER BY 1, 2 LIMIT 6", engine)
        assert list(df.columns) == ["demand_date", "category", "units"] and len(df) == 6
        assert str(df["demand_date"].iloc[0]) == "2026-01-01" and df["units"].dtype.kind == "f"
        with engine.connect() as c, pytest.raises(sa.exc.DBAPIError) as e:
            c.execute(sa.text("SELECT holder_email FROM marts.passes"))
        assert e.value.orig.pgcode == "42501"
    finally:
        engine.dispose()


def test_psql(pg: Pg) -> None:
    psql = shutil.which("psql")
    if psql is None:
        print("psql not installed: skipped (CI installs postgresql-client)")
        pytest.skip("psql not installed")
    env = {"PGPASSWORD": pg.keys["analysts"], "PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "10"}
    base = [psql, "-h", "127.0.0.1", "-p", str(pg.port), "-U", "analysts-key", "-d", "civicflow", "-X", "-A", "-t", "-v", "VERBOSITY=verbose"]
    out = subprocess.run([*base, "-c", "SELECT count(*) FROM marts.demand"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "20000", out.stderr
    out = subprocess.run([*base, "-c", "SELECT holder_email FROM marts.passes"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "42501" in out.stderr and "rule identity_column" in out.stderr and "CANARY" not in out.stdout + out.stderr
    out = subprocess.run([*base, "-c", r"\dt marts.*"], env=env, capture_output=True, text=True, timeout=60)
    assert "salaries" not in out.stdout
    bad = subprocess.run([*base, "-c", "SELECT 1"], env={**env, "PGPASSWORD": "cfk_wrong"}, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "password authentication failed" in bad.stderr


# ------------------------------------------------------------------ large results stream
CLIENT = """
import sys, psycopg
n = 0
with psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="bulk-key", password=sys.argv[2], dbname="civicflow") as c:
    for _ in c.cursor().stream(f"SELECT i, i * 2 AS j, 'row-' || i AS s FROM range({int(sys.argv[3])}) t(i)"):
        n += 1
print(n)
"""


def wire_bytes_of(rows: int) -> int:
    """The DataRows of the CLIENT's query: framing (7 bytes, 4 per value) and i, 2i, 'row-' || i as text."""
    return sum(7 + 12 + 4 + 2 * len(str(i)) + len(str(2 * i)) for i in range(rows))


def stream_rows(pg: Pg, rows: int) -> int:
    """Peak growth of the server's RSS while a psycopg client in another process streams `rows` rows."""

    def run() -> None:
        out = subprocess.run([sys.executable, "-c", CLIENT, str(pg.port), pg.keys["bulk"], str(rows)], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == str(rows)

    return peak_rss_growth(run)


def test_a_million_rows_stream_in_batches_with_flat_server_memory(pg: Pg) -> None:
    # Warm with a full-size stream first: the allocators (a malloc arena per worker thread,
    # Arrow's pool, DuckDB's buffers) keep what they took once (~20-30 MB, the same after 50k
    # rows or 1M); what is measured afterwards is what a stream holds.
    stream_rows(pg, 1_000_000)
    before = pg.server.stats.batches
    small = stream_rows(pg, 200_000)
    large = stream_rows(pg, 1_000_000)
    wire = wire_bytes_of(1_000_000)
    # sent as DuckDB produced them, a write of about CHUNK_BYTES at a time
    assert pg.server.stats.batches - before >= (wire + wire_bytes_of(200_000)) // (2 * CHUNK_BYTES)
    print(f"server RSS grew {small / 1e6:.1f} MB for 200k rows ({wire_bytes_of(200_000) / 1e6:.0f} MB on the wire), "
          f"{large / 1e6:.1f} MB for 1M rows ({wire / 1e6:.0f} MB on the wire)")
    # Held whole, the answer alone is about the wire size (Arrow) and several times it as rows.
    assert large < wire / 4
    # Five times the rows, not five times the memory: what grows is a batch, not the answer.
    assert large < 2 * small + wire / 10
    audits = pg.state.con.execute("SELECT outcome, rule, result_rows FROM audit WHERE key_name = 'bulk-key' AND sql LIKE 'SELECT i, i * 2%' ORDER BY seq").fetchall()
    assert [a[2] for a in audits] == [1_000_000, 200_000, 1_000_000] and all(a[:2] == ("ok", None) for a in audits)


def test_the_python_client_raises_gateway_error_when_no_server_answers() -> None:
    from support.governance_env import free_port

    from governance.client import Client, GatewayError

    with Client(f"http://127.0.0.1:{free_port()}", key="cfk_x", timeout=5) as client, pytest.raises(GatewayError) as e:
        client.usage()
    assert e.value.rule == "unreachable" and "cannot be reached" in e.value.message
