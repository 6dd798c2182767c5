"""Discovery: GET /v1/catalog, `civicflow catalog`, and information_schema on the Postgres
endpoint all list the same grant — relations, columns, types, privacy classes, dbt
descriptions, row counts — with the snapshot they were read from."""

from __future__ import annotations

import json

import duckdb
import httpx
import psycopg
from support.governance_env import ServerThread
from support.pg_gateway import Pg, pg  # noqa: F401 (pg is a fixture)
from typer.testing import CliRunner

from governance.server import create_app
from warehouse.snapshots import current_snapshot


def _get(url: str, key: str | None) -> httpx.Response:
    return httpx.get(f"{url}/v1/catalog", headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=30)


def test_catalog_lists_the_grant_with_types_privacy_descriptions_and_rows(pg: Pg) -> None:
    snap = current_snapshot(pg.env.published)
    with ServerThread(create_app(pg.gateway)) as http:
        analysts = _get(http.url, pg.keys["analysts"])
        cleared = _get(http.url, pg.keys["cleared"]).json()
        refused = _get(http.url, "cfk_nobody")
    assert analysts.status_code == 200
    body = analysts.json()
    assert body["snapshot"] == snap.name and analysts.headers["X-Snapshot"] == snap.name
    assert body["snapshot_as_of"][:4] == snap.name[len("warehouse-"):][:4] and body["snapshot_as_of"].endswith("Z")
    assert body["data_date"] == "2027-07-10" and analysts.headers["X-Data-Date"] == "2027-07-10"  # the last day of data
    rels = {r["name"]: r for r in body["relations"]}
    assert set(rels) == {"marts.demand", "marts.passes", "marts.funnel", "marts.big", "staging.stg_onboarding"}  # not secret.*, not raw.*
    with duckdb.connect(str(pg.env.home / "warehouse.duckdb"), read_only=True) as con:  # what was published
        assert rels["marts.demand"]["rows"] == con.execute("SELECT count(*) FROM marts.demand").fetchone()[0] == 20000
    # A team's relations are built for it at publish: tables, with their row counts.
    assert rels["staging.stg_onboarding"]["kind"] == "table" and rels["staging.stg_onboarding"]["rows"] > 0
    demand = {c["name"]: c for c in rels["marts.demand"]["columns"]}
    assert rels["marts.demand"]["description"] == "Units demanded per neighbourhood, category and day"
    assert demand["units"] == {"name": "units", "type": "DOUBLE", "privacy": "public", "description": "units picked up that day"}
    assert demand["demand_date"]["type"] == "DATE" and demand["category"]["description"] is None
    passes = {c["name"]: c["privacy"] for c in rels["marts.passes"]["columns"]}
    # Published as cells counting holders: no pass_id, and no identity column (not cleared).
    assert passes == {"pass_type": "public", "home_neighbourhood_id": "quasi", "holders": "public"}
    cleared_passes = {c["name"]: c["privacy"] for r in cleared["relations"] if r["name"] == "marts.passes" for c in r["columns"]}
    # Clearance adds identity attributes as cell dimensions (birth_year), never contact details.
    assert cleared_passes["birth_year"] == "identity" and "holder_email" not in cleared_passes
    assert refused.status_code == 401 and refused.json()["error"]["rule"] == "unauthenticated"
    audited = pg.state.con.execute("SELECT team, outcome, message FROM audit WHERE message LIKE 'GET /v1/catalog%' ORDER BY seq").fetchall()
    assert [a[:2] for a in audited] == [("analysts", "catalog"), ("cleared", "catalog"), (None, "refused")]


PG_NAMES = {"VARCHAR": "character varying", "DOUBLE": "double precision", "DATE": "date", "BIGINT": "bigint", "HUGEINT": "numeric"}


def test_information_schema_on_the_postgres_endpoint_shows_the_same_grant(pg: Pg) -> None:
    """The same relations and columns, with the types as PostgreSQL names them (what Grafana and Power BI read)."""
    listed = {r["name"]: [(c["name"], PG_NAMES[c["type"]]) for c in r["columns"]] for r in pg.gateway.catalog(pg.keys["analysts"]).catalog}
    with psycopg.connect(**pg.dsn()) as c:
        rows = c.execute("SELECT table_schema || '.' || table_name, column_name, data_type FROM information_schema.columns "
                         "WHERE table_schema NOT IN ('information_schema', 'pg_catalog') ORDER BY 1, ordinal_position").fetchall()
    seen: dict[str, list[tuple[str, str]]] = {}
    for rel, col, typ in rows:
        seen.setdefault(rel, []).append((col, typ))
    assert seen == listed


def test_cli_catalog_prints_the_grant_as_table_or_json(pg: Pg) -> None:
    from pipelines.cli import app

    runner = CliRunner()
    with ServerThread(create_app(pg.gateway)) as http:
        as_json = runner.invoke(app, ["catalog", "--format", "json", "--key", pg.keys["analysts"], "--url", http.url])
        as_table = runner.invoke(app, ["catalog", "--key", pg.keys["analysts"], "--url", http.url], terminal_width=200)
        bad = runner.invoke(app, ["catalog", "--format", "xml", "--key", pg.keys["analysts"], "--url", http.url])
        refused = runner.invoke(app, ["catalog", "--key", "cfk_nobody", "--url", http.url])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert {r["name"] for r in data["relations"]} >= {"marts.demand", "marts.passes"}
    assert as_table.exit_code == 0 and "marts.demand (20,000 rows)" in as_table.output and "units picked up that day" in as_table.output
    assert "holder_email" not in as_table.output and f"snapshot {data['snapshot']}" in " ".join(as_table.output.split())
    assert bad.exit_code == 1 and "--format must be table or json" in bad.output and "Traceback" not in bad.output
    assert refused.exit_code == 2 and "refused [unauthenticated]" in refused.output
    assert runner.invoke(app, ["catalog", "--help"]).exit_code == 0
