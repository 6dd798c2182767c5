"""`civicflow query` prints every row it received or says how many it held back, writes
table/csv/json to the terminal or a file, formats floats, prints --estimate like a query, and
names the snapshot the answer came from."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from support.governance_env import ServerThread
from support.pg_gateway import Pg, pg  # noqa: F401 (pg is a fixture)
from typer.testing import CliRunner

from governance.server import create_app
from warehouse.snapshots import current_snapshot

ROWS_SQL = "SELECT x, x / 7 AS ratio FROM marts.big WHERE x < 500 ORDER BY x"  # 500 rows, a float column


def test_cli_query_rows_formats_and_footer(pg: Pg, tmp_path: Path, monkeypatch) -> None:
    from pipelines.cli import app
    from pipelines.cli import governance as governance_cli

    monkeypatch.setattr(governance_cli.console, "width", 300)
    runner = CliRunner()
    key = pg.keys["bulk"]
    snap = current_snapshot(pg.env.published).name
    with ServerThread(create_app(pg.gateway)) as http:
        base = ["--key", key, "--url", http.url]
        table = runner.invoke(app, ["query", ROWS_SQL, *base], terminal_width=200)
        everything = runner.invoke(app, ["query", ROWS_SQL, "--show", "1000", *base], terminal_width=200)
        as_json = runner.invoke(app, ["query", ROWS_SQL, "--format", "json", *base])
        to_file = runner.invoke(app, ["query", ROWS_SQL, "--format", "csv", "--out", str(tmp_path / "rows.csv"), *base])
        estimate = runner.invoke(app, ["query", "--estimate", ROWS_SQL, *base])
        bad = runner.invoke(app, ["query", ROWS_SQL, "--format", "xml", *base])
    assert table.exit_code == 0, table.output
    assert "showing 200 of 500 rows (300 held back" in table.output and f"snapshot {snap}" in table.output
    assert "0.1429" in table.output and "0.142857142" not in table.output  # 1/7 to 4 decimals
    assert "499" not in table.output and "499" in everything.output and "500 rows ·" in everything.output
    data = json.loads(as_json.stdout)
    assert len(data) == 500 and data[7] == {"x": 7, "ratio": 1.0}
    assert to_file.exit_code == 0 and "500 rows written to" in to_file.output
    with open(tmp_path / "rows.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["x", "ratio"] and len(rows) == 501 and rows[-1][0] == "499"
    assert estimate.exit_code == 0 and estimate.output.startswith("estimate ") and "marts.big" in estimate.output and "audit id" in estimate.output
    assert bad.exit_code == 1 and "--format must be table, csv or json" in bad.output and "Traceback" not in bad.output


def test_python_client_gives_pandas_real_date_and_timestamp_dtypes(pg: Pg) -> None:
    from governance.client import Client

    sql = "SELECT demand_date, CAST(demand_date AS TIMESTAMP) AS at, sum(units) AS units FROM marts.demand GROUP BY ALL ORDER BY 1 LIMIT 3"
    with ServerThread(create_app(pg.gateway)) as http, Client(http.url, pg.keys["analysts"]) as client:
        df = client.query_pandas(sql)
        assert client.last.snapshot == current_snapshot(pg.env.published).name
    assert df["demand_date"].dtype.kind == "M" and df["at"].dtype.kind == "M" and df["units"].dtype.kind == "f"
    assert str(df["demand_date"].iloc[0].date()) == "2026-01-01"
