"""What makes a step 'unchanged' (pipelines.unchanged): the fingerprints move exactly when a
step's inputs do, and the stored state round-trips."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest

from ingest.manifest import create_manifest
from pipelines.unchanged import (
    CheckOutcome,
    StepState,
    clear_state,
    dump_metadata,
    load_metadata,
    raw_digest,
    read_state,
    relations_digest,
    write_state,
)


@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "w.duckdb"))
    c.execute("CREATE SCHEMA raw; CREATE SCHEMA marts")
    create_manifest(c)
    c.execute("CREATE TABLE raw.telemetry (seq INTEGER, value DOUBLE)")
    c.execute("INSERT INTO raw.telemetry VALUES (1, 2.0), (2, 3.5)")
    c.execute("CREATE TABLE marts.demand (day DATE, units DOUBLE)")
    c.execute("INSERT INTO marts.demand VALUES ('2026-01-01', 4), ('2026-01-02', 5)")
    yield c
    c.close()


def manifest_row(con, sha: str, status: str) -> None:
    cols = [r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = '_load_manifest' ORDER BY ordinal_position").fetchall()]
    values = {"file_sha256": sha, "status": status, "contract": "telemetry", "file_path": f"telemetry/2026-01-01/{sha}.jsonl", "file_name": f"{sha}.jsonl", "source": "telemetry", "version": 1}
    present = [c for c in cols if c in values]
    con.execute(f"INSERT INTO raw._load_manifest ({', '.join(present)}) VALUES ({', '.join('?' for _ in present)})", [values[c] for c in present])


def test_raw_digest_moves_with_loaded_files_and_row_counts_only(con):
    manifest_row(con, "a" * 64, "loaded")
    before = raw_digest(con)
    # A night that loads nothing still writes manifest rows (a re-sent or refused file) and
    # quarantine rows: neither is dbt's input.
    manifest_row(con, "a" * 64, "duplicate_file")
    manifest_row(con, "b" * 64, "refused")
    assert raw_digest(con) == before
    manifest_row(con, "c" * 64, "loaded")
    after_file = raw_digest(con)
    assert after_file != before
    con.execute("INSERT INTO raw.telemetry VALUES (3, 1.0)")  # e.g. a replayed quarantine row
    assert raw_digest(con) != after_file


def test_relations_digest_moves_with_any_value(con):
    before = relations_digest(con, ["marts.demand", "marts.missing"])
    assert relations_digest(con, ["marts.demand", "marts.missing"]) == before
    con.execute("UPDATE marts.demand SET units = 4.5 WHERE day = '2026-01-01'")
    changed = relations_digest(con, ["marts.demand", "marts.missing"])
    assert changed != before
    con.execute("CREATE TABLE marts.missing AS SELECT 1 AS x")
    assert relations_digest(con, ["marts.demand", "marts.missing"]) != changed


def test_state_round_trips_and_is_cleared_before_real_work(con):
    md = {"dagster/row_count": dg.MetadataValue.int(12), "chart": dg.MetadataValue.md("| a |"), "plan": dg.MetadataValue.path("/x/plan.csv")}
    state = StepState("f" * 64, "run-1234", (CheckOutcome(("marts", "demand"), "not_null_units", True, "WARN"),), {"marts/demand": dump_metadata(md)})
    write_state(con, "dbt", state)
    got = read_state(con, "dbt")
    assert got == state
    assert load_metadata(got.metadata["marts/demand"]) == md
    assert raw_digest(con) == raw_digest(con)  # its own table is not part of raw's digest
    before = raw_digest(con)
    write_state(con, "forecast", StepState("e" * 64, "run-5678"))
    assert raw_digest(con) == before
    clear_state(con, "dbt")
    assert read_state(con, "dbt") is None and read_state(con, "forecast").run_id == "run-5678"
