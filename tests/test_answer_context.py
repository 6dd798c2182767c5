"""Every answer says which data it reflects (snapshot, publish time, data date) over HTTP, the
CLI and the Postgres endpoint; relations published as cells are named in a note; and LIMIT
returns the rows an analyst asks for, on an aggregate and on a relation about people."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import httpx
import psycopg
import pytest
from support.governance_env import DATA_DATE, ServerThread
from support.pg_gateway import Pg, pg  # noqa: F401 (pg is a fixture)
from typer.testing import CliRunner

from governance.publication import data_date_of
from governance.server import create_app
from warehouse.snapshots import current_snapshot, published_at, teams_dir

PEOPLE_ROWS = "SELECT * FROM marts.passes ORDER BY pass_type, home_neighbourhood_id LIMIT 12"
PEOPLE_GROUPS = "SELECT home_neighbourhood_id, sum(holders) AS holders FROM marts.passes GROUP BY 1 ORDER BY 1 LIMIT 12"
# two relations about people joined: the second line counts rows (no single weight) and drops the
# groups below min_group_size; ordered smallest first, so a LIMIT taken before the drop kept nothing
JOINED = ("SELECT p.home_neighbourhood_id, count(*) AS n FROM marts.passes p, marts.funnel f "
          "WHERE f.home_neighbourhood_id <= p.home_neighbourhood_id GROUP BY 1 ORDER BY n, 1")


def _post(url: str, key: str, sql: str, fmt: str = "json") -> httpx.Response:
    return httpx.post(f"{url}/v1/query", json={"sql": sql, "format": fmt}, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def test_every_team_file_records_the_data_date(pg: Pg) -> None:
    snap = current_snapshot(pg.env.published)
    recorded = {f.stem: json.loads(f.read_text())["data_date"] for f in teams_dir(snap).glob("*.json")}
    assert set(recorded) >= {"analysts", "cleared"} and set(recorded.values()) == {DATA_DATE.isoformat()}
    assert data_date_of(snap) == DATA_DATE and data_date_of(None) is None


def test_http_answers_carry_snapshot_publish_time_and_data_date(pg: Pg) -> None:
    snap = current_snapshot(pg.env.published)
    with ServerThread(create_app(pg.gateway)) as http:
        as_json = _post(http.url, pg.keys["analysts"], "SELECT category, sum(units) AS units FROM marts.demand GROUP BY 1")
        as_csv = _post(http.url, pg.keys["analysts"], "SELECT count(*) FROM marts.demand", "csv")
        estimate = httpx.post(f"{http.url}/v1/estimate", json={"sql": "SELECT units FROM marts.demand"},
                              headers={"Authorization": f"Bearer {pg.keys['analysts']}"}, timeout=60).json()
        catalog = httpx.get(f"{http.url}/v1/catalog", headers={"Authorization": f"Bearer {pg.keys['analysts']}"}, timeout=60)
    body = as_json.json()
    assert (body["snapshot"], body["snapshot_as_of"], body["data_date"]) == (snap.name, published_at(snap), "2027-07-10")
    for r in (as_json, as_csv):
        assert r.headers["X-Data-Date"] == "2027-07-10" and r.headers["X-Snapshot"] == snap.name
        assert r.headers["X-Snapshot-As-Of"] == published_at(snap)
    assert body["notes"] == [] and as_json.headers["X-Notes"] == ""  # demand is not about people: nothing to say
    assert estimate["data_date"] == "2027-07-10"
    assert catalog.json()["data_date"] == "2027-07-10" and catalog.headers["X-Data-Date"] == "2027-07-10"


def test_limit_on_a_relation_about_people_returns_its_cells_with_a_note(pg: Pg) -> None:
    with ServerThread(create_app(pg.gateway)) as http:
        rows = _post(http.url, pg.keys["analysts"], PEOPLE_ROWS)
        groups = _post(http.url, pg.keys["analysts"], PEOPLE_GROUPS)
        demand = _post(http.url, pg.keys["analysts"], "SELECT * FROM marts.demand LIMIT 12")
    assert rows.status_code == 200, rows.text
    body = rows.json()
    assert len(body["rows"]) == 12 and body["suppressed_groups"] == 0 and not body["truncated"]
    assert body["columns_out"] == ["pass_type", "home_neighbourhood_id", "holders"]
    assert all(r[2] >= 5 for r in body["rows"])  # every row is a cell of at least min_group_size holders, never a person
    assert any(r[1] is None for r in body["rows"])  # the remainder: small neighbourhoods merged at publish
    note = "marts.passes is published as cells of at least 5 people (sum `holders`); 2 small cells merged at publish: NULL in pass_type, home_neighbourhood_id means 'other'"
    assert body["notes"] == [note] and rows.headers["X-Notes"] == note
    g = groups.json()
    assert len(g["rows"]) == 12 and g["suppressed_groups"] == 0 and g["notes"] == [note]
    assert len(demand.json()["rows"]) == 12 and demand.json()["notes"] == []


def test_limit_counts_the_groups_kept_after_small_ones_are_dropped(pg: Pg) -> None:
    """When the second line drops groups, a LIMIT applies to the groups kept: an analyst who
    asks for n rows gets n (while there are n), never "1 row, 11 suppressed"."""
    everything = pg.gateway.query(pg.keys["analysts"], JOINED)
    assert everything.outcome == "ok", everything.message
    kept = everything.table.to_pylist()
    assert everything.suppressed_groups == 4 and len(kept) == 7 and min(r["n"] for r in kept) == 5
    limited = pg.gateway.query(pg.keys["analysts"], JOINED + " LIMIT 3")
    assert limited.outcome == "ok" and limited.table.to_pylist() == kept[:3] and limited.suppressed_groups == 4
    offset = pg.gateway.query(pg.keys["analysts"], JOINED + " LIMIT 2 OFFSET 1")
    assert offset.table.to_pylist() == kept[1:3]


def test_cleared_team_reads_cells_with_identity_dimensions_never_a_holder(pg: Pg) -> None:
    r = pg.gateway.query(pg.keys["cleared"], "SELECT * FROM marts.passes LIMIT 12")
    assert r.outcome == "ok" and len(r.table) == 12 and "birth_year" in r.table.column_names
    assert min(r.table.column("holders").to_pylist()) >= 5 and "pass_id" not in r.table.column_names


def test_postgres_clients_get_the_data_date_as_parameter_status_and_notes_as_notices(pg: Pg) -> None:
    snap = current_snapshot(pg.env.published)
    notices: list[str] = []
    with psycopg.connect(**pg.dsn(), autocommit=True) as c:
        c.add_notice_handler(lambda d: notices.append(d.message_primary))
        assert c.info.parameter_status("civicflow.data_date") is None  # told with the first answer
        assert c.execute("SELECT sum(units) FROM marts.demand").fetchone()[0] > 0
        assert c.info.parameter_status("civicflow.data_date") == "2027-07-10"
        assert c.info.parameter_status("civicflow.snapshot") == snap.name
        assert c.info.parameter_status("civicflow.snapshot_published") == published_at(snap)
        assert c.execute("SHOW civicflow.data_date").fetchone() == ("2027-07-10",)
        assert notices == []
        assert len(c.execute(PEOPLE_ROWS).fetchall()) == 12
        assert len(c.execute(PEOPLE_ROWS, prepare=True).fetchall()) == 12  # extended protocol too
    assert len(notices) == 2 and notices[0].startswith("marts.passes is published as cells of at least 5 people")


def test_cli_footer_names_the_data_date_and_prints_the_notes(pg: Pg, tmp_path: Path) -> None:
    from pipelines.cli import app

    runner = CliRunner()
    with ServerThread(create_app(pg.gateway)) as http:
        args = ["--key", pg.keys["analysts"], "--url", http.url]
        table = runner.invoke(app, ["query", PEOPLE_ROWS, *args], terminal_width=200)
        estimate = runner.invoke(app, ["query", "--estimate", "SELECT units FROM marts.demand", *args], terminal_width=200)
        catalog = runner.invoke(app, ["catalog", *args], terminal_width=200)
    assert table.exit_code == 0, table.output
    text = " ".join(table.output.split())
    assert "12 rows · cost" in text and "data as of 2027-07-10 · snapshot warehouse-" in text
    assert "note: marts.passes is published as cells of at least 5 people" in text
    assert "data as of 2027-07-10" in " ".join(estimate.output.split())
    assert "data as of 2027-07-10" in " ".join(catalog.output.split())


@pytest.mark.parametrize("previous, window_end, expected", [(None, date(2026, 3, 1), date(2026, 3, 1)),
                                                           (date(2026, 3, 9), date(2026, 3, 1), date(2026, 3, 9))])
def test_publish_asset_data_date_never_goes_back_on_a_backfill(previous, window_end, expected) -> None:
    from pipelines.publish_assets import next_data_date

    assert next_data_date(window_end, previous) == expected
